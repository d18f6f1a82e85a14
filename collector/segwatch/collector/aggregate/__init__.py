"""aggregate: model calls → one mergeable state per model, minute, segment and quantity.

What enters: a :class:`~segwatch.collector.model_calls.ModelCallBatch` (in
the collector, one flush unit from ``durable/``'s flusher; from
``profile/``, a chunk of a training table), and the segmentation plan from
``segment/``, which says where each call falls.

What leaves: :class:`~segwatch.collector.store.aggregate_rows.AggregateRows`,
one row per model (name, version, stage), minute, segment and quantity:
count, rows received, missing, numeric count, sum, sum of squares, min, max,
the log histogram (key → weight), category counts and exemplar trace ids.
ClickHouse merges rows of the same key, whichever batch or collector wrote
them, so nothing is kept between batches but the category vocabularies and
each model's field and segment budgets (and, in the caller's hands, an
:class:`~.exemplars.ExemplarMemory`: each group's exemplar already written).

Threads: :meth:`~.aggregator.SegmentAggregator.aggregate` runs on its
caller's thread and blocks it for the computation only (no I/O): the call
buffer's flusher thread in the collector, the thread loading a baseline in
``profile/``. It is thread-safe: what it keeps between batches is under
locks. Given an executor (a backfill's, on two cores), it sums each batch's
quantities there, several at once, and adds their rows in order: the same
rows. Its inner loops (:func:`~segwatch.collector.kernels.group_stats`,
:func:`~segwatch.collector.kernels.group_entries`) live in ``kernels.py`` at
the package root, because ``decode/`` runs its span-reading loops from the
same compiled library (``_kernels.c``); without a C compiler both use the
numpy formulation there, which gives the same numbers. ctypes releases the
GIL during a compiled loop, so receiver threads decode while the flusher
aggregates.

- ``aggregator``: :class:`SegmentAggregator`: which fields and dimensions of
  each model are aggregated, the vocabularies, the loop over models.
- ``quantity_values``: one quantity's values over one model's rows: present
  rows, finite numbers with their histogram keys, labels folded into the top K.
- ``segment_groups``: every (dimension, minute, segment) group of one model's
  calls, and one quantity's rows over all of them through the compiled loops.
- ``exemplars``: :class:`ExemplarMemory`, the exemplar each (segment, minute)
  group already has in ``otel_traces``, so a small segment costs one span a
  minute rather than one a flush.
- ``histogram``: :class:`LogHistogram`, the DDSketch-style log histogram: the
  bucket key of a value, the value of a key, one accuracy per store.
"""
