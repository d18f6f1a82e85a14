"""ModelCallProcessor: decoded spans → segments → aggregates → the exporter."""

from __future__ import annotations

import dataclasses
import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .aggregate import SegmentAggregator
from .call_buffer import CallBuffer
from .columns import ModelCallBatch
from .config import SpoolConfig
from .decode import decode_request
from .errors import PermanentError, RetryableError
from .export import ClickHouseExporter
from .labels import decode_labels
from .limits import NO_LIMITS, RequestLimits
from .rows import TableRows
from .span_scan import scan_request
from .spool import TRACES, TRACES_LIMITED, Position, Record, Spool, SpoolFullError, record_bytes

__all__ = ["ConsumeResult", "ModelCallProcessor", "ProcessorStats", "spool_payload"]

_logger = logging.getLogger(__name__)
_DEFAULT_FLUSHING = SpoolConfig()  # how often and how much the buffer flushes, and its bound
_OLDEST = struct.Struct("<q")
"""A spooled trace request starts with the lateness limit it was accepted under..."""
_SPAN_LIMITS = struct.Struct("<qIII")
"""... then (TRACES_LIMITED) the span limits: a replay rejects exactly the spans it did then."""


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
    rejected_by: Counter[str] = field(default_factory=Counter)  # spans, then "label"


class ModelCallProcessor:
    """Consumes OTLP trace and log requests; returns once their data is durable.

    Thread-safe: the receiver calls :meth:`consume` from its worker threads.
    With a ``spool``, a request is durable once it is in the fsynced spool
    (its calls then wait in the :class:`CallBuffer` for the next flush);
    without one, once its calls are in the store. Labels always go straight
    to the store. Blocks the calling thread at most ``store_timeout`` seconds.
    ``start()`` starts the flusher; ``shutdown()`` flushes what is pending.
    """

    def __init__(
        self,
        aggregator: SegmentAggregator,
        exporter: ClickHouseExporter,
        *,
        spool: Spool | None = None,
        raw_calls: bool = True,
        flushing: SpoolConfig = _DEFAULT_FLUSHING,
        store_timeout: float = 30.0,
        backpressure_timeout: float = 5.0,
        allowed_lateness: float | None = None,
        allowed_skew: float | None = None,
        limits: RequestLimits = RequestLimits(),  # noqa: B008 - frozen
        max_models: int = 1_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.aggregator = aggregator
        self._exporter = exporter
        self._spool = spool
        self.buffer = CallBuffer(
            aggregator,
            exporter,
            spool,
            raw_calls=raw_calls,
            flush_interval=flushing.flush_interval,
            max_flush_calls=flushing.flush_calls,
            max_pending_calls=flushing.max_pending_calls,
            reload=_reload,
        )
        self._store_timeout = store_timeout
        self._backpressure_timeout = backpressure_timeout  # then UNAVAILABLE
        self._allowed_lateness = allowed_lateness
        self._limits = limits
        self._allowed_skew = allowed_skew  # seconds a span may start in the future
        self._max_models = max_models
        self._models: set[str] = set()  # model names taken so far
        self._clock = clock
        self._lock = threading.Lock()
        self._spool_lock = threading.Lock()  # spool order == buffer order
        self.stats = ProcessorStats()

    def start(self) -> None:
        self.buffer.start()

    def shutdown(self) -> None:
        self.buffer.shutdown()

    def flush(self, timeout: float = 60.0) -> None:
        """Return once every call accepted so far is in the store."""
        self.buffer.flush(timeout)

    def replay(
        self, records: Iterable[Record], interrupted: tuple[Position, Position] | None
    ) -> int:
        """Queue the spooled requests a previous run acknowledged but did not flush.

        Call after :meth:`start` and before the receiver starts: the records
        are queued in spool order, no more at a time than the pending limit
        (a long store outage can leave a large spool), waiting for the flusher
        as long as it takes. The interrupted flush (if any) is queued to be
        flushed again exactly, with its original deduplication token. Returns
        the calls queued.
        """
        calls = 0
        for record in records:
            batch = _reload(record)
            if batch is None:
                continue
            self._admit_models(batch, replay=True)  # acknowledged once: never refused now
            self.buffer.reserve(len(batch), timeout=None)
            opens = interrupted is not None and record.end == interrupted[0]
            closes = interrupted is not None and record.end == interrupted[1]
            self.buffer.add(batch, record.end, record_bytes(record.payload),
                            opens_flush=opens, closes_flush=closes)  # fmt: skip
            calls += len(batch)
        return calls

    def consume(self, request: ExportTraceServiceRequest | bytes) -> ConsumeResult:
        """Store the model calls of a request, parsed or as its serialized bytes.

        Bytes take the fast path (:func:`.span_scan.scan_request`) when the
        request allows it; malformed bytes raise :class:`PermanentError`.
        """
        oldest_ns = 0
        now = self._clock()
        if self._allowed_lateness is not None:
            oldest_ns = int((now - self._allowed_lateness) * 1e9)
        limits = self._limits
        if self._allowed_skew is not None:
            limits = dataclasses.replace(limits, newest_ns=int((now + self._allowed_skew) * 1e9))
        batch = _decode(request, oldest_ns, limits)
        self._admit_models(batch)
        with self._lock:
            self.stats.requests += 1
            self.stats.rejected_spans += batch.rejected_spans
            self.stats.rejected_by.update(batch.rejected_by)
            self.stats.ignored_values += batch.ignored_values
        message = "; ".join(batch.rejection_reasons)
        if len(batch):
            self._accept(batch, request, oldest_ns, limits)
            with self._lock:
                self.stats.model_calls += len(batch)
        return ConsumeResult(len(batch), batch.rejected_spans, message)

    def _admit_models(self, batch: ModelCallBatch, replay: bool = False) -> None:
        """Refuse a request that would make the collector track more than ``max_models``."""
        names = {model[0] for model in batch.models}
        with self._lock:
            new = names - self._models
            if new and not replay and len(self._models) + len(new) > self._max_models:
                raise PermanentError(
                    f"model {sorted(new)[0]!r} would pass the limit of {self._max_models} models "
                    "(segments.max_models)"
                )
            self._models |= new

    def _accept(
        self,
        batch: ModelCallBatch,
        request: ExportTraceServiceRequest | bytes,
        oldest_ns: int,
        limits: RequestLimits,
    ) -> None:
        self.buffer.reserve(len(batch), self._backpressure_timeout)
        if self._spool is None:
            waiter = self.buffer.add(batch)
            assert waiter is not None
            _wait(waiter, self._store_timeout)
            return
        body = request if isinstance(request, bytes) else request.SerializeToString()
        payload = spool_payload(body, oldest_ns, limits)
        with self._spool_lock:
            try:
                end = self._spool.write(TRACES_LIMITED, payload)
            except (SpoolFullError, OSError) as exc:
                raise RetryableError(f"cannot spool the request: {exc}") from exc
            self.buffer.add(batch, end, record_bytes(payload))
        try:
            self._spool.sync(end)
        except OSError as exc:
            raise RetryableError(f"cannot sync the spool: {exc}") from exc

    def consume_logs(self, request: ExportLogsServiceRequest) -> ConsumeResult:
        """Store the ``ml.label`` records of a log request; other records are ignored."""
        batch = decode_labels(request)
        if len(batch.rows):
            self._store([batch.rows])
        with self._lock:
            self.stats.labels += len(batch.rows)
            self.stats.rejected_labels += batch.rejected
            if batch.rejected:
                self.stats.rejected_by["label"] += batch.rejected
        return ConsumeResult(len(batch.rows), batch.rejected, "; ".join(batch.reasons))

    def _store(self, parts: list[TableRows]) -> None:
        _wait(self._exporter.submit(*parts), self._store_timeout)


def spool_payload(request: bytes, oldest_ns: int = 0, limits: RequestLimits | None = None) -> bytes:
    """A trace request as the spool keeps it: the limits it was accepted under, then it.

    Without ``limits``, a :data:`.spool.TRACES` record; with them, :data:`.spool.TRACES_LIMITED`.
    """
    head = _OLDEST.pack(oldest_ns)
    if limits is not None:
        head += _SPAN_LIMITS.pack(
            limits.newest_ns,
            limits.max_spans_per_request,
            limits.max_attributes_per_span,
            limits.max_attribute_bytes,
        )
    return head + request


def _reload(record: Record) -> ModelCallBatch | None:
    """The model calls of a spooled trace request, as when it was accepted; None if unreadable."""
    payload = record.payload
    head = _OLDEST.size + (_SPAN_LIMITS.size if record.kind == TRACES_LIMITED else 0)
    if record.kind not in (TRACES, TRACES_LIMITED) or len(payload) < head:
        _logger.error("skipping a spool record of unknown kind %d", record.kind)
        return None
    # The same limits as when it was accepted: the same calls come back (the request
    # passed them then, so it cannot be refused now).
    (oldest_ns,) = _OLDEST.unpack_from(payload)
    limits = NO_LIMITS
    if record.kind == TRACES_LIMITED:
        newest, spans, attributes, attribute_bytes = _SPAN_LIMITS.unpack_from(payload, _OLDEST.size)
        limits = RequestLimits(0, spans, attributes, attribute_bytes, newest)
    try:
        return _decode(payload[head:], oldest_ns, limits)
    except PermanentError as exc:  # cannot happen: it was decoded before it was spooled
        _logger.error("skipping an unreadable spool record: %s", exc)
        return None


def _wait(future: Future[None], timeout: float) -> None:
    try:
        future.result(timeout=timeout)
    except Exception as exc:
        raise RetryableError(f"the store did not take the data: {exc}") from exc


def _decode(
    request: ExportTraceServiceRequest | bytes, oldest_ns: int, limits: RequestLimits
) -> ModelCallBatch:
    if isinstance(request, bytes):
        batch = scan_request(request, oldest_ns, limits)
        if batch is not None:
            return batch
        try:
            request = ExportTraceServiceRequest.FromString(request)
        except DecodeError as exc:
            raise PermanentError(f"not an OTLP trace request: {exc}") from exc
    return decode_request(request, oldest_ns, limits)
