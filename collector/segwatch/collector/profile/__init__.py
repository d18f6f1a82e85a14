"""profile: baseline profiles, the pipeline's second entrance, for tables instead of spans.

What enters: a training set (a CSV or parquet file, a pandas DataFrame, a dict
of columns) for one model and version. What leaves: the same per-segment
aggregates live traffic gets (the same segmentation plan and aggregator), as
rows of ``ml_baseline_aggregates`` under a profile name (``training`` by default), which
``psi_drift_training`` compares live windows with; and, read back, the
quantile edges that switch numeric dimensions from log decades to the
profile's deciles (:func:`~.profiles.refresh_quantile_buckets`).

Threads: a load runs on the caller's thread (the CLI, or the collector's API
thread for an upload) and inserts through its own client; it shares no state
with the running pipeline except the plan's quantile edges, which it replaces
whole.

- ``profiles``: :func:`load_profile`, :func:`baseline`, reading CSV/parquet, quantile edges.
"""
