"""ModelCallProcessor: an OTLP request decoded, written to the spool, its calls to the buffer.

The receiver's consumer. It decodes a trace request through ``decode/``
(refusing bad spans), writes the request to the write-ahead spool and hands
the decoded calls to the :class:`.call_buffer.CallBuffer`, which aggregates
and stores them later; the request is acknowledged once the spool is
fsynced. Label records go straight to the exporter. At start it replays what
the spool holds; it also takes requeued dead letters.
"""

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

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config.limits import NO_LIMITS, RequestLimits
from segwatch.collector.config.storage import SpoolConfig, TracesConfig
from segwatch.collector.decode.fast_reader import scan_request
from segwatch.collector.decode.labels import decode_labels
from segwatch.collector.decode.raw_spans import SerializedSpans, SpanBytes
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.errors import PermanentError, RetryableError
from segwatch.collector.model_calls import ModelCallBatch
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.collector.store.rows import TableRows

from .call_buffer import CallBuffer
from .dead_letters import requests_in, split_requeued
from .python_turn import PYTHON_TURN
from .spool import (
    REQUEUED,
    TRACES,
    TRACES_LIMITED,
    Position,
    Record,
    Spool,
    SpoolFullError,
    record_bytes,
)

__all__ = ["ConsumeResult", "ModelCallProcessor", "ProcessorStats", "spool_payload"]

_logger = logging.getLogger(__name__)
_DEFAULT_FLUSHING = SpoolConfig()  # how often and how much the buffer flushes, and its bound
_DEFAULT_TRACES = TracesConfig()  # which spans go to otel_traces
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
    to the store. Blocks the calling thread at most ``backpressure_timeout``
    seconds waiting for room in the buffer, then for the spool's write and
    fsync, or (without a spool, and for labels) at most ``store_timeout``
    seconds waiting for the store.
    ``start()`` starts the flusher; ``shutdown()`` flushes what is pending.
    """

    def __init__(
        self,
        aggregator: SegmentAggregator,
        exporter: ClickHouseExporter,
        *,
        spool: Spool | None = None,
        raw_calls: bool = True,
        traces: TracesConfig = _DEFAULT_TRACES,
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
            traces=traces,
            flush_interval=flushing.flush_interval,
            max_flush_calls=flushing.flush_calls,
            max_pending_calls=flushing.max_pending_calls,
            reload=_reload,
            max_flush_attempts=flushing.max_flush_attempts,
        )
        self._keep_spans = traces.write  # else the spans' bytes need not wait for the flush
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
        as long as it takes. The interrupted flush (if any: the first records)
        is decoded whole before it is queued, as one unit with its original
        deduplication token, whatever the flush settings are now: the flusher
        can take neither a part of it nor anything after it first. Returns the
        calls queued.
        """
        calls = 0
        unit: list[tuple[Record, ModelCallBatch, str | None]] = []
        for record in records:
            reloaded = _reload(record)
            if interrupted is not None and interrupted[0] <= record.end <= interrupted[1]:
                batch, token = reloaded or (ModelCallBatch(), None)
                unit.append((record, batch, token))
                if record.end == interrupted[1]:
                    calls += self._queue_unit(unit, interrupted)
                    unit = []
                continue
            if reloaded is None:
                continue
            batch, token = reloaded
            self._admit_models(batch, replay=True)  # acknowledged once: never refused now
            reserved = self.buffer.reserve(len(batch), timeout=None)
            self.buffer.add(batch, record.end, record_bytes(record.payload), token=token,
                            reserved=reserved)  # fmt: skip
            calls += len(batch)
        if unit:  # the range ends past the spool's end: cannot happen, but never drop calls
            calls += self._queue_unit(unit, interrupted)
        return calls

    def _queue_unit(
        self,
        unit: list[tuple[Record, ModelCallBatch, str | None]],
        interrupted: tuple[Position, Position] | None,
    ) -> int:
        """Queue an interrupted flush's records as the one flush they were."""
        assert self._spool is not None and interrupted is not None
        batch = ModelCallBatch.concat([batch for _, batch, _ in unit])
        # A requeued dead letter is a flush of its own, under its own token.
        token = unit[0][2] if len(unit) == 1 and unit[0][2] else self._spool.token(*interrupted)
        self._admit_models(batch, replay=True)
        size = sum(record_bytes(record.payload) for record, _, _ in unit)
        self.buffer.add(batch, unit[-1][0].end, size, token=token, first=unit[0][0].end)
        return len(batch)

    def requeue(self, payload: bytes) -> int:
        """Send a dead letter back (a :data:`.spool.REQUEUED` payload); returns its calls.

        It is spooled like a request and flushed alone, under its original token.
        """
        if self._spool is None:
            raise PermanentError("this collector has no spool: nothing to requeue into")
        record = Record(Position(0, 0), REQUEUED, payload)
        reloaded = _reload(record)
        if reloaded is None:
            raise PermanentError("the dead letter cannot be read")
        batch, token = reloaded
        self._admit_models(batch, replay=True)
        with self._spool_lock:
            try:
                end = self._spool.write(REQUEUED, payload)
            except (SpoolFullError, OSError) as exc:
                raise RetryableError(f"cannot spool the dead letter: {exc}") from exc
            self.buffer.add(batch, end, record_bytes(payload), token=token)
        self._spool.sync(end)
        return len(batch)

    def consume(self, request: ExportTraceServiceRequest | bytes) -> ConsumeResult:
        """Store the model calls of a request, parsed or as its serialized bytes.

        Bytes take the fast path
        (:func:`segwatch.collector.decode.fast_reader.scan_request`) when the
        request allows it; malformed bytes raise :class:`PermanentError`.
        """
        oldest_ns = 0
        now = self._clock()
        if self._allowed_lateness is not None:
            oldest_ns = int((now - self._allowed_lateness) * 1e9)
        limits = self._limits
        if self._allowed_skew is not None:
            limits = dataclasses.replace(limits, newest_ns=int((now + self._allowed_skew) * 1e9))
        started = time.monotonic()
        batch = self._decode_in_turn(request, oldest_ns, limits)
        if not self._keep_spans:
            batch.span_origins.clear()
        self._admit_models(batch)
        with self._lock:
            self.stats.requests += 1
            self.stats.rejected_spans += batch.rejected_spans
            self.stats.rejected_by.update(batch.rejected_by)
            self.stats.ignored_values += batch.ignored_values
        message = "; ".join(batch.rejection_reasons)
        if len(batch):
            patience = self._backpressure_timeout
            if patience is not None:  # the turn's wait counts against the back-pressure bound
                patience = max(0.0, patience - (time.monotonic() - started))
            self._accept(batch, request, oldest_ns, limits, patience)
            with self._lock:
                self.stats.model_calls += len(batch)
        return ConsumeResult(len(batch), batch.rejected_spans, message)

    def _decode_in_turn(
        self, request: ExportTraceServiceRequest | bytes, oldest_ns: int, limits: RequestLimits
    ) -> ModelCallBatch:
        """The request decoded in its turn (one decode at a time, not beside a flush's
        aggregation: see python_turn); :class:`RetryableError` when the turn does not
        come within the back-pressure bound (a flush of many calls holds it)."""
        patience = self._backpressure_timeout
        if not PYTHON_TURN.acquire(timeout=-1 if patience is None else patience):
            raise RetryableError(
                f"the collector is busy: no turn to decode the request within {patience} s"
            )
        try:
            return _decode(request, oldest_ns, limits)
        finally:
            PYTHON_TURN.release()

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
        patience: float | None,
    ) -> None:
        reserved = self.buffer.reserve(len(batch), patience)
        if self._spool is None:
            waiter = self.buffer.add(batch, reserved=reserved)
            assert waiter is not None
            _wait(waiter, self._store_timeout)
            return
        try:
            body = request if isinstance(request, bytes) else request.SerializeToString()
            head = spool_head(oldest_ns, limits)  # written before the body, not joined to it
            with self._spool_lock:
                try:
                    end = self._spool.write(TRACES_LIMITED, body, head=head)
                except (SpoolFullError, OSError) as exc:
                    raise RetryableError(f"cannot spool the request: {exc}") from exc
                size = record_bytes(head) + len(body)
                if body is request:  # the fast reader's spans point into it
                    _read_spans_from_spool(batch, self._spool.reader(end, len(body)))
                self.buffer.add(batch, end, size, reserved=reserved)
                reserved = False  # taken by add()
        finally:
            if reserved:  # not added: give the room back
                self.buffer.release(len(batch))
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


def _read_spans_from_spool(batch: ModelCallBatch, read: SpanBytes) -> None:
    """Let ``batch`` read its spans back from its spooled request at its flush instead of
    keeping the request's bytes until then (see :mod:`..decode.raw_spans`)."""
    batch.span_origins[:] = [
        dataclasses.replace(origin, source=origin.source.reading_from(read))
        if isinstance(origin.source, SerializedSpans)
        else origin
        for origin in batch.span_origins
    ]


def spool_payload(request: bytes, oldest_ns: int = 0, limits: RequestLimits | None = None) -> bytes:
    """A trace request as the spool keeps it: the limits it was accepted under, then it.

    Without ``limits``, a :data:`.spool.TRACES` record; with them, :data:`.spool.TRACES_LIMITED`.
    """
    return spool_head(oldest_ns, limits) + request


def spool_head(oldest_ns: int = 0, limits: RequestLimits | None = None) -> bytes:
    """What :func:`spool_payload` puts before the request."""
    head = _OLDEST.pack(oldest_ns)
    if limits is not None:
        head += _SPAN_LIMITS.pack(
            limits.newest_ns,
            limits.max_spans_per_request,
            limits.max_attributes_per_span,
            limits.max_attribute_bytes,
        )
    return head


def _reload(record: Record) -> tuple[ModelCallBatch, str | None] | None:
    """The model calls of a spooled record, as when they were accepted, and the token they
    must be flushed under if they are a unit of their own; None if unreadable."""
    if record.kind == REQUEUED:
        token, inner = split_requeued(record.payload)
        batches = [_reload_request(kind, payload) for kind, payload in requests_in(inner)]
        return ModelCallBatch.concat([b for b in batches if b is not None]), token
    batch = _reload_request(record.kind, record.payload)
    return None if batch is None else (batch, None)


def _reload_request(kind: int, payload: bytes) -> ModelCallBatch | None:
    """The model calls of a spooled trace request, as when it was accepted; None if unreadable."""
    head = _OLDEST.size + (_SPAN_LIMITS.size if kind == TRACES_LIMITED else 0)
    if kind not in (TRACES, TRACES_LIMITED) or len(payload) < head:
        _logger.error("skipping a spool record of unknown kind %d", kind)
        return None
    # The same limits as when it was accepted: the same calls come back (the request
    # passed them then, so it cannot be refused now).
    (oldest_ns,) = _OLDEST.unpack_from(payload)
    limits = NO_LIMITS
    if kind == TRACES_LIMITED:
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
