"""service: the collector process: the pipeline wired, and what runs beside it.

What enters: a validated :class:`~segwatch.collector.config.CollectorConfig`.
What leaves: a running :class:`~.collector.Collector`: the receiver, the
processor and its call buffer, the exporter, the detector scheduler, the local
HTTP API and the anomaly notifiers, built each with its next consumer and
started in reverse order of the data flow (nothing is accepted before its
consumer is ready), stopped in data-flow order.

Threads: ``Collector.start()`` and ``shutdown()`` are called from the main
thread (``shutdown`` is safe twice and bounded by the CLI's SIGTERM watchdog).
Each component owns its threads: gRPC workers (receive), the flusher (durable),
the exporter's writer (store), the scheduler's thread, one thread per API
request, the store connection's retry thread. Detector runs and analysts'
queries use clients of their own, so neither holds up ingestion.

- ``collector``: :class:`Collector`, building and running the pipeline from a config.
- ``api``, ``api_door``, ``api_upload``, ``analyst_queries``: the local HTTP API, who may use
  it, a training set uploaded to it, budgeted SQL.
- ``discovery``: the file through which the CLI finds a running collector's API.
- ``scheduler``, ``alerts``: detectors on their cadence; anomalies out as OTLP logs and webhooks.
- ``detect``: the detectors run now, on demand (``segwatch detect``, ``/api/v1/detect``, the demo).
- ``logs``: JSON log lines.
"""
