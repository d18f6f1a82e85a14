"""receive: the OTLP/gRPC door (``TraceService``, ``LogsService``) of the collector.

What enters: OTLP Export requests from any OTel SDK or Collector, over gRPC
(TLS, mutual TLS and a bearer token when configured; message size limited by
``receiver.limits.max_message_mib``). What leaves: each request, still serialized, to
its consumer (:class:`~segwatch.collector.durable.processor.ModelCallProcessor`),
and the consumer's outcome as the OTLP answer: OK with ``partial_success``,
``INVALID_ARGUMENT`` for a :class:`~segwatch.collector.errors.PermanentError`,
``UNAVAILABLE`` with ``RetryInfo`` for a
:class:`~segwatch.collector.errors.RetryableError`.

Threads: gRPC's worker pool calls the consumer, several requests at once; the
consumer must be thread-safe and returns once the request's data is durable.
``start()`` returns once the port is bound; ``shutdown()`` stops accepting and
waits for the requests in flight.

- ``receiver``: :class:`OTLPReceiver`, the two gRPC services, auth and TLS.
"""
