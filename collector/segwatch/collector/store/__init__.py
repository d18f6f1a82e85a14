"""store: rows for ClickHouse's tables, and the one writer that inserts them.

What enters: :class:`~.rows.TableRows` (the aggregates of a flush, the raw
model calls, the delayed labels, a baseline profile), column by column as numpy
arrays, each submission with a deduplication token. What leaves: ``INSERT ...
FORMAT Native`` blocks built here (``native``), one insert per table and
token, through clickhouse-connect to the store the DSN names (``chdb://`` in
process, ``http(s)://`` a server); the store's answer as a future per
submission: done, or an error that says whether it is the store's (retry) or
the data's (``InsertRefusedError``).

Threads: any thread may :meth:`~.exporter.ClickHouseExporter.submit`; rows are
checked on the submitting thread and inserted by the exporter's one writer
thread, which groups concurrent submissions (group commit). The exporter never
retries: the caller owns the retry (the call buffer retries a flush under the
same token; a label request is answered UNAVAILABLE). :class:`~.connection.StoreConnection`
opens the store lazily and keeps trying in a background thread while it is
unreachable.

- ``native``: ClickHouse Native-format blocks from numpy columns.
- ``rows``: :class:`TableRows`, one table's rows and their Native encoding.
- ``aggregate_rows``, ``call_rows``: the rows of ``ml_segment_aggregates`` and ``ml_model_calls``.
- ``late_rows``: the marks of ``ml_late_buckets``, for minute rows written late.
- ``trace_rows``: which calls' spans go to ``otel_traces`` (the trace-id sample, the
  exemplars) and their rows, as the OpenTelemetry Collector's exporter writes them.
- ``span_writer``: :class:`SpanWriter`, those rows gathered across flushes and inserted
  in one go, best effort, by a timer thread of its own and the exporter.
- ``exporter``: :class:`ClickHouseExporter`, batched inserts with group commit.
- ``connection``: the collector's clients on its store, usable before the store is.
- ``settings``, ``part_durability``: store-wide settings all collectors must share; fsynced parts.
- ``retention``: the tables' TTLs from ``storage.retention``, applied at store setup.
"""
