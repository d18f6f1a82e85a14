"""OTLPReceiver: the OTLP/gRPC endpoint (default 127.0.0.1:4317).

Serves ``TraceService`` (model-call spans) and ``LogsService`` (delayed labels).
Maps pipeline outcomes to OTLP answers: accepted data → OK (with
``partial_success`` counting rejected spans or log records and saying why); a
:class:`RetryableError` → ``UNAVAILABLE``; a :class:`PermanentError` →
``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from segwatch.collector.config.endpoints import parse_endpoint
from segwatch.collector.config.network import TlsConfig
from segwatch.collector.config.startup import unprotected_receiver
from segwatch.collector.durable.processor import ConsumeResult
from segwatch.collector.errors import PermanentError, RetryableError
from segwatch.collector.metrics import CollectorMetrics

__all__ = ["OTLPConsumer", "OTLPReceiver", "retry_info_metadata"]

_logger = logging.getLogger(__name__)


class OTLPConsumer(Protocol):
    """The receiver's next component: takes trace and log requests."""

    def consume(
        self, request: trace_service_pb2.ExportTraceServiceRequest | bytes
    ) -> ConsumeResult: ...

    def consume_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> ConsumeResult: ...


def retry_info_metadata(message: str, delay: float) -> tuple[tuple[str, bytes], ...]:
    """Trailers telling an OTLP client when to retry, as the OTLP specification asks.

    The standard place is a ``google.rpc.Status`` with a ``RetryInfo`` detail in
    ``grpc-status-details-bin`` (read by the Go and Java exporters); the Python
    SDK's exporter reads the bare ``RetryInfo`` from ``google.rpc.retryinfo-bin``.
    """
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(int(delay * 1e9))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=grpc.StatusCode.UNAVAILABLE.value[0], message=message, details=[detail]
    )
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


def _answer(
    consume: Callable[[], ConsumeResult], context: Any, count: Callable[[str], None]
) -> ConsumeResult:
    """Run the pipeline; turn its errors into the gRPC codes OTLP prescribes."""
    try:
        result = consume()
    except PermanentError as exc:
        count("INVALID_ARGUMENT")
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except RetryableError as exc:
        count("UNAVAILABLE")
        _logger.warning("answering UNAVAILABLE: %s", exc)
        context.set_trailing_metadata(retry_info_metadata(str(exc), exc.retry_after))
        context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    else:
        count("OK")
        return result
    raise AssertionError("unreachable: context.abort raises")


def _counter(metrics: CollectorMetrics | None, signal: str) -> Callable[[str], None]:
    if metrics is None:
        return lambda code: None
    return lambda code: metrics.requests.labels(signal, code).inc()


class _TraceService:
    """TraceService/Export, taking the request as bytes: the consumer parses it (fast path)."""

    def __init__(self, consumer: OTLPConsumer, metrics: CollectorMetrics | None) -> None:
        self._consumer = consumer
        self._count = _counter(metrics, "traces")

    def handler(self) -> grpc.GenericRpcHandler[bytes, Any]:
        export = grpc.unary_unary_rpc_method_handler(
            self.Export,
            request_deserializer=None,  # raw bytes
            response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": export}
        )

    def Export(self, request: bytes, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        result = _answer(lambda: self._consumer.consume(request), context, self._count)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if result.rejected:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.message
        return response


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, consumer: OTLPConsumer, metrics: CollectorMetrics | None) -> None:
        self._consumer = consumer
        self._count = _counter(metrics, "logs")

    def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: Any
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        result = _answer(lambda: self._consumer.consume_logs(request), context, self._count)
        response = logs_service_pb2.ExportLogsServiceResponse()
        if result.rejected:
            response.partial_success.rejected_log_records = result.rejected
            response.partial_success.error_message = result.message
        return response


class _BearerToken(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Lets through only calls whose ``authorization`` metadata is ``Bearer <token>``.

    Compared in constant time (``hmac.compare_digest``): the time to refuse a
    guess says nothing about how much of it was right.
    """

    def __init__(self, token: str, metrics: CollectorMetrics | None) -> None:
        self._expected = f"Bearer {token}".encode()

        def refuse(request: Any, context: Any) -> None:
            if metrics is not None:
                metrics.requests.labels("any", "UNAUTHENTICATED").inc()
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._refuse = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        given = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                break
        if hmac.compare_digest(given, self._expected):
            return continuation(details)
        return self._refuse


class OTLPReceiver:
    """gRPC server for OTLP traces and logs. ``start()`` returns once the port is bound.

    With ``tls``, the port speaks TLS only (and with a client CA, only to clients
    presenting a certificate it signed); with ``token``, every call must carry it
    as a bearer token, or is answered ``UNAUTHENTICATED``. Bound beyond loopback
    with neither, ``start()`` refuses unless ``insecure`` says anyone who reaches
    the port may send data.
    """

    def __init__(
        self,
        endpoint: str,
        consumer: OTLPConsumer,
        max_workers: int = 8,
        *,
        max_message_bytes: int = 64 << 20,
        tls: TlsConfig | None = None,
        token: str | None = None,
        metrics: CollectorMetrics | None = None,
        insecure: bool = False,
    ) -> None:
        self._endpoint = endpoint
        self._insecure = insecure
        self._consumer = consumer
        self._max_workers = max_workers
        self._max_message_bytes = max_message_bytes
        self._tls = tls or TlsConfig()
        self._token = token
        self._metrics = metrics
        self._server: grpc.Server | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        host, _ = parse_endpoint(self._endpoint)
        return f"{host}:{self.port}"

    def start(self) -> None:
        refusal = unprotected_receiver(
            self._endpoint,
            tls=self._tls.enabled,
            token=bool(self._token),
            insecure=self._insecure,
        )
        if refusal is not None:  # the rule validate applies (config.startup)
            raise ValueError(str(refusal))
        host, port = parse_endpoint(self._endpoint)
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="segwatch-otlp"
            ),
            interceptors=[_BearerToken(self._token, self._metrics)] if self._token else [],
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers((_TraceService(self._consumer, self._metrics).handler(),))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _LogsService(self._consumer, self._metrics), server
        )
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self._tls.enabled:
                self.port = server.add_secure_port(bind, _server_credentials(self._tls))
            else:
                self.port = server.add_insecure_port(bind)
        except RuntimeError as exc:
            where = f"receiver.grpc.endpoint {self._endpoint}"
            raise OSError(f"{where}: cannot listen ({exc})") from exc
        if not self.port:  # gRPC says no more (its log line has the reason: the port is taken)
            raise OSError(f"receiver.grpc.endpoint {self._endpoint}: cannot listen there")
        server.start()
        self._server = server

    def shutdown(self, grace: float = 5.0) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None


def _server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    def read(path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    client_ca = read(tls.client_ca_file) if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(read(tls.key_file), read(tls.cert_file))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
