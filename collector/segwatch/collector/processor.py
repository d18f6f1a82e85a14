"""ModelCallProcessor: decoded spans → segments → aggregates → the exporter."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .aggregate import SegmentAggregator
from .calls import call_rows
from .columns import ModelCallBatch
from .decode import decode_request
from .errors import PermanentError, RetryableError
from .export import ClickHouseExporter
from .labels import decode_labels
from .rows import TableRows
from .span_scan import scan_request

__all__ = ["ConsumeResult", "ModelCallProcessor", "ProcessorStats"]


@dataclass(frozen=True)
class ConsumeResult:
    """What happened to one request: spans accepted as model calls, spans rejected, and why."""

    accepted: int
    rejected: int
    message: str = ""


@dataclass
class ProcessorStats:
    requests: int = 0
    model_calls: int = 0
    rejected_spans: int = 0
    ignored_values: int = 0
    labels: int = 0
    rejected_labels: int = 0


class ModelCallProcessor:
    """Consumes OTLP trace and log requests; returns once their data is stored.

    Thread-safe: the receiver calls :meth:`consume` from its worker threads.
    Blocks the calling thread until the exporter has written the request's
    rows (group commit), at most ``store_timeout`` seconds.
    """

    def __init__(
        self,
        aggregator: SegmentAggregator,
        exporter: ClickHouseExporter,
        *,
        raw_calls: bool = True,
        store_timeout: float = 30.0,
        allowed_lateness: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.aggregator = aggregator
        self._exporter = exporter
        self._raw_calls = raw_calls
        self._store_timeout = store_timeout
        self._allowed_lateness = allowed_lateness
        self._clock = clock
        self._lock = threading.Lock()
        self.stats = ProcessorStats()

    def consume(self, request: ExportTraceServiceRequest | bytes) -> ConsumeResult:
        """Store the model calls of a request, parsed or as its serialized bytes.

        Bytes take the fast path (:func:`.span_scan.scan_request`) when the
        request allows it; malformed bytes raise :class:`PermanentError`.
        """
        oldest_ns = 0
        if self._allowed_lateness is not None:
            oldest_ns = int((self._clock() - self._allowed_lateness) * 1e9)
        batch = _decode(request, oldest_ns)
        with self._lock:
            self.stats.requests += 1
            self.stats.rejected_spans += batch.rejected_spans
            self.stats.ignored_values += batch.ignored_values
        message = "; ".join(batch.rejection_reasons)
        if len(batch):
            aggregates = self.aggregator.aggregate(batch)
            parts: list[TableRows] = [aggregates]
            if self._raw_calls:
                parts.append(call_rows(batch))
            self._store(parts)
            with self._lock:
                self.stats.model_calls += len(batch)
        return ConsumeResult(len(batch), batch.rejected_spans, message)

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        """Store the ``ml.label`` records of a log request; other records are ignored."""
        batch = decode_labels(request)
        if len(batch.rows):
            self._store([batch.rows])
        with self._lock:
            self.stats.labels += len(batch.rows)
            self.stats.rejected_labels += batch.rejected
        return ConsumeResult(len(batch.rows), batch.rejected, "; ".join(batch.reasons))

    def _store(self, parts: list[TableRows]) -> None:
        future = self._exporter.submit(*parts)
        try:
            future.result(timeout=self._store_timeout)
        except Exception as exc:
            raise RetryableError(f"the store did not take the data: {exc}") from exc


def _decode(request: ExportTraceServiceRequest | bytes, oldest_ns: int) -> ModelCallBatch:
    if isinstance(request, bytes):
        batch = scan_request(request, oldest_ns)
        if batch is not None:
            return batch
        try:
            request = ExportTraceServiceRequest.FromString(request)
        except DecodeError as exc:
            raise PermanentError(f"not an OTLP trace request: {exc}") from exc
    return decode_request(request, oldest_ns)
