"""profile: baseline profiles, the pipeline's second entrance, for tables instead of spans.

What enters: a training set (a CSV or parquet file, a pandas DataFrame, a dict
of columns) for one model and version. What leaves: the same per-segment
aggregates live traffic gets (the same segmentation plan and aggregator), as
rows of ``ml_baseline_aggregates`` under a profile name (``training`` by default), which
``psi_drift_training`` compares the live windows of the models whose config names
it (else ``training``) with; and, read back from the profile's segments, the
quantile edges it was bucketed with, which switch live numeric dimensions from log
decades to the same buckets (:func:`~.quantiles.refresh_quantile_buckets`).

Threads: a load runs on the caller's thread (the CLI, or the collector's API
thread for an upload) and inserts through its own client; it shares no state
with the running pipeline except the plan's quantile edges, which it replaces
whole.

The second table it takes is a file of logged predictions (``segwatch
backfill``): one row per call with its time, written as the minute aggregates
(``ml_segment_aggregates``) and raw calls (``ml_model_calls``) the calls' spans
would have made, chunk after chunk: read and aggregated on the caller's thread
(a chunk's quantities summed on two worker threads where two cores are free),
and inserted through the caller's client by one insert thread while the next
chunk is aggregated (one insert in flight).

- ``profiles``: :func:`load_profile`, :func:`baseline`, reading CSV/parquet, which
  field each column is (:func:`profile_columns`), NaN as MISSING.
- ``quantiles``: the quantile edges a profile and live traffic share.
- ``columns``: which field of a model each column of a table is.
- ``logged_calls``: a table of logged calls in chunks, as the batches its spans would make.
- ``backfill``: :func:`backfill_file`, those batches aggregated and stored, once.
- ``staged``: a profile load written aside and swapped in whole.
"""
