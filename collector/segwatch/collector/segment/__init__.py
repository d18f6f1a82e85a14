"""segment: which segment of every dimension each model call falls in.

What enters: a :class:`~segwatch.collector.model_calls.ModelCallBatch` and the
config's segmentation (``segments:`` and each model's ``fields:``). What
leaves: per dimension, one segment code per call and the segments' labels
(``country=ES``, ``amount=[100, 1000)``, ``age=MISSING``, crosses
``country×device``), which :mod:`segwatch.collector.aggregate` groups by.

Threads: a :class:`~.plan.SegmentationPlan` is built once from the config and
read by the thread that aggregates; its numeric buckets are cached under a
lock, and a baseline profile's quantile edges replace them whole
(:meth:`~.plan.SegmentationPlan.use_quantile_edges`, called from the API's or
the starting thread). The functions in ``segments`` and ``buckets`` are pure.
The category vocabularies (the top K values seen so far) belong to the
aggregator, which owns them on its one thread.

- ``buckets``: numeric buckets (log, linear, explicit edges, quantiles) with special values apart.
- ``segments``: columnar assignment of calls to segments, crosses, MISSING and ``__other__``.
- ``plan``: :class:`SegmentationPlan`, what the config says about splitting each model's traffic.
"""
