"""CallBuffer: model calls between their acknowledgement and the store.

With a spool, a request is acknowledged once it is in the spool; its decoded
calls wait here and are flushed every ``flush_interval`` seconds (sooner when
``max_flush_calls`` are waiting): all waiting batches are joined, aggregated
once and written in one insert per table. A minute of one segment then costs
one aggregate row per flush instead of one per request, and an insert's
fixed cost is paid once per flush: that is where the collector's throughput
comes from. Each flush carries a deduplication token naming its spool range,
so a replay after a crash cannot count it twice.

Without a spool (an in-memory store, or ``storage.spool.enabled: false``)
the caller waits for the flush, which starts at once: acknowledged still
means stored.

A flush is a unit (:mod:`.flush_unit`): once its insert may have landed,
it is retried (and replayed after a crash) exactly as it was, records and
token, whatever the flush settings are now; nothing after it is flushed
until it is stored.

If the store fails, the calls stay and the flush is retried with backoff.
A flush that fails while the store answers is set aside as a dead letter
after ``max_flush_attempts`` tries (:mod:`.flush_writer` writes the flushes).
Memory stays bounded by ``max_pending_calls`` (the flush being written
counts: it comes back if it fails; a read-back from the spool may pass the
bound by the one request that fills the room): beyond it, with a spool,
requests are still acknowledged once spooled, but their calls are *spilled*
(not kept here) and read back from the spool, in order, as the flushes make
room; the spool's own size limit then bounds the outage it can absorb (the
receiver answers UNAVAILABLE beyond it). Without a spool,
:meth:`CallBuffer.reserve` refuses calls beyond the limit.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config.storage import SpoolConfig, TracesConfig
from segwatch.collector.errors import RetryableError
from segwatch.collector.model_calls import ModelCallBatch
from segwatch.collector.store.exporter import ClickHouseExporter

from .flush_unit import PendingBatch, Reload, flush_unit, read_spilled
from .flush_writer import FlushWriter
from .spool import Position, Spool

__all__ = ["CallBuffer", "Reload"]

_DEFAULTS = SpoolConfig()
_TRACES = TracesConfig()

_logger = logging.getLogger(__name__)


class CallBuffer:
    """Collects decoded batches and flushes them to the exporter on one thread.

    ``add`` is called by receiver threads (in spool order, under the
    processor's lock); ``start()`` starts the flusher, ``shutdown()`` flushes
    what is left and stops it.
    """

    def __init__(
        self,
        aggregator: SegmentAggregator,
        exporter: ClickHouseExporter,
        spool: Spool | None = None,
        *,
        raw_calls: bool = True,
        traces: TracesConfig = _TRACES,
        flush_interval: float = 1.0,
        max_flush_calls: int = _DEFAULTS.flush_calls,
        max_pending_calls: int = _DEFAULTS.max_pending_calls,
        store_timeout: float = 60.0,
        reload: Reload | None = None,
        max_flush_attempts: int = _DEFAULTS.max_flush_attempts,
    ) -> None:
        self._writer = FlushWriter(
            aggregator,
            exporter,
            spool,
            raw_calls=raw_calls,
            traces=traces,
            store_timeout=store_timeout,
            max_flush_attempts=max_flush_attempts,
        )
        self._spool = spool
        self._flush_interval = flush_interval
        self._max_flush_calls = max_flush_calls
        self._max_pending_calls = max(max_pending_calls, max_flush_calls)  # room for one flush
        self._pending: list[PendingBatch] = []
        self._pending_calls = 0
        self._reserved_calls = 0  # room reserve() promised to adds still to come
        # Entries are stored in the order they were added, so counts say what is stored:
        self._added = 0  # entries added so far
        self._stored = 0  # ... of which in the store
        self._wanted = 0  # flush() wants the first this many stored now
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        # Spilling (with a spool and ``reload``, which decodes a spool record back
        # into calls): the records after ``_spilled_after`` up to ``_spilled_upto``
        # are acknowledged but only in the spool; None when nothing is spilled.
        self._reload = reload if spool is not None else None
        self._last_end: Position | None = None  # end of the last record added
        self._spilled_after: Position | None = None
        self._spilled_upto: Position | None = None
        self.spilled_records = 0  # read back so far
        self._spilled_calls = 0  # calls only in the spool now
        self._in_flight_calls = 0  # calls of the flush being written
        self.peak_pending_calls = 0  # the most calls in memory: waiting, and being written

    def start(self) -> None:
        if self._writer.spans is not None:
            self._writer.spans.start()
        self._thread = threading.Thread(target=self._run, name="segwatch-flush", daemon=True)
        self._thread.start()

    @property
    def pending_calls(self) -> int:
        """Calls waiting for a flush (not the flush being written: see held_calls)."""
        return self._pending_calls

    @property
    def held_calls(self) -> int:
        """Calls in memory: waiting for a flush, and in the flush being written (what
        ``max_pending_calls`` bounds)."""
        return self._pending_calls + self._in_flight_calls

    @property
    def unstored_calls(self) -> int:
        """Acknowledged calls not yet in the store: waiting here, or spilled to the spool."""
        return self._pending_calls + self._spilled_calls + self._in_flight_calls

    @property
    def spilling(self) -> bool:
        """Acknowledged calls wait in the spool only (the store is behind)."""
        return self._spilled_after is not None

    @property
    def store_failing(self) -> bool:
        """The last flush failed; it is retried with backoff."""
        return bool(self._retry_at)

    @property
    def failures(self) -> int:
        """Flushes that failed so far (the store's fault or not)."""
        return self._writer.failures

    @property
    def dead_letters(self) -> int:
        """Flushes set aside as dead letters so far."""
        return self._writer.dead_letters

    @property
    def dead_letter_calls(self) -> int:
        """The model calls those dead letters hold."""
        return self._writer.dead_letter_calls

    @property
    def spans_lost(self) -> int:
        """Spans for ``otel_traces`` whose insert failed (best effort: see the span writer)."""
        return self._writer.spans.lost if self._writer.spans is not None else 0

    def retry_now(self) -> None:
        """The store is back: retry a failed flush now rather than at its next backoff."""
        with self._cond:
            if self._retry_at:
                self._retry_at = time.monotonic()
                self._cond.notify_all()

    def reserve(self, calls: int, timeout: float | None = 5.0) -> bool:
        """Wait until ``calls`` more fit under the pending limit and hold that room for them;
        :class:`RetryableError` if they do not in time.

        True: the room is held until the caller's :meth:`add` with ``reserved=True``
        takes it, or :meth:`release` gives it back (a request that fails in
        between). Two requests that waited together cannot both take the same room,
        so a batch that got its room is never spilled for want of it.

        Waiting here is the back-pressure: the client's next request waits for
        this answer, so intake slows to what the store takes. A store that
        stays behind for ``timeout`` seconds (None: wait as long as it takes)
        makes the receiver answer UNAVAILABLE, or, when the buffer can spill
        (a spool and ``reload``), makes the next :meth:`add` spill (False: no
        room held); a failing store spills at once.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._held_calls() and self._held_calls() + calls > self._max_pending_calls:
                if self._reload is not None and (self._spilled_after is not None or self._retry_at):
                    return False  # spilling, or the store is failing: no point waiting
                left = 60.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    if self._reload is not None:
                        return False  # add() spills it
                    raise RetryableError(
                        f"{self.held_calls} model calls are waiting for the store "
                        f"(limit {self._max_pending_calls}); retry later"
                    )
                self._cond.wait(left)
            self._reserved_calls += calls
            return True

    def release(self, calls: int) -> None:
        """Give back room :meth:`reserve` held for a batch that will not be added."""
        with self._cond:
            self._reserved_calls = max(0, self._reserved_calls - calls)
            self._cond.notify_all()

    def _held_calls(self) -> int:
        """Calls in memory (waiting here, or in the flush being written: a failed flush
        comes back) and room promised to adds to come (under the lock)."""
        return self.held_calls + self._reserved_calls

    def add(
        self, batch: ModelCallBatch, end: Position | None = None, size: int = 0,
        *, token: str | None = None, first: Position | None = None, reserved: bool = False,
    ) -> Future[None] | None:  # fmt: skip
        """Queue a batch; without a spool, returns a future that resolves once it is stored.

        With a spool, ``end`` is where the batch's spool record ends; records
        must be added in spool order. With a ``token`` the batch is a unit:
        the spool records from ``first`` (the end of the first; default
        ``end``) to ``end`` flushed alone, under that token (a replayed
        interrupted flush, a requeued dead letter). A unit never starts a
        spill, but while one is under way it joins it (one record: it is read
        back with its token), so the flushes keep the spool's order.
        ``reserved``: :meth:`reserve` held room for it (taken now); such a batch
        spills only to follow a spill already under way.
        """
        waiter: Future[None] | None = Future() if self._spool is None else None
        with self._cond:
            if reserved:
                self._reserved_calls = max(0, self._reserved_calls - len(batch))
            if self._stopping and waiter is not None:
                waiter.set_exception(RuntimeError("the collector is shutting down"))
                return waiter
            self._added += 1
            previous, self._last_end = self._last_end, end
            spills = (
                self._spilled_after is not None and first in (None, end)
                if token is not None
                else self._spills(len(batch), end, previous, reserved)
            )
            if spills:
                self._spilled_upto = end
                self._spilled_calls += len(batch)
                return None
            waiters = [waiter] if waiter is not None else []
            first = first if first is not None else end
            entry = PendingBatch(batch, end, size, waiters, time.monotonic(), token, first)
            self._pending.append(entry)
            self._pending_calls += len(batch)
            self._note_peak()
            self._cond.notify()
        return waiter

    def _spills(
        self, calls: int, end: Position | None, previous: Position | None, reserved: bool
    ) -> bool:
        """Whether a batch goes to the spool only (under the lock). Once one is, all are, until
        the flusher has read them back: the flushes must follow the spool's order."""
        if self._reload is None or end is None:
            return False
        if self._spilled_after is None:
            if reserved or not self.held_calls:
                return False  # its room was held for it, or nothing is held
            if self._held_calls() + calls <= self._max_pending_calls:
                return False
            if previous is None:
                return False  # cannot happen: something is pending, so something was added
            self._spilled_after = previous
            _logger.warning(
                "%d model calls are waiting for the store: spilling new ones to the spool",
                self._pending_calls,
            )
        return True

    def flush(self, timeout: float = 60.0) -> None:
        """Return once everything added before the call is in the store (or raise), and
        the spans of what was flushed are stored or given up.

        Without a spool, calls whose flush failed count as done: their senders
        were answered with the error, nothing was acknowledged.

        Calls added meanwhile do not make it wait longer: under steady load it
        returns as soon as the earlier ones are stored.
        """
        with self._cond:
            wanted = self._added
            self._wanted = max(self._wanted, wanted)
            self._cond.notify_all()
            deadline = time.monotonic() + timeout
            while self._stored < wanted:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError("the store did not take the pending model calls in time")
        # Their spans (otel_traces) too, gathered across flushes by the span writer.
        if self._writer.spans is not None:
            self._writer.spans.flush(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout: float = 60.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._writer.spans is not None:  # the last flushes' spans, before the exporter stops
            self._writer.spans.shutdown()

    # -- the flusher -----------------------------------------------------------

    def _due(self, now: float) -> bool:
        if not self._pending:
            return False
        if now < self._retry_at and not self._stopping:
            return False
        return (
            self._stopping
            or self._stored < self._wanted
            or self._spool is None
            or self._pending_calls >= self._max_flush_calls
            or now - self._pending[0].arrived >= self._flush_interval
            or self._spool_filling()
        )

    def _spool_filling(self) -> bool:
        """Over half the spool waits for the store: flush now rather than refuse requests
        later (a large ``flush_calls`` under a light load would wait the interval out)."""
        spool = self._spool
        return spool is not None and spool.unflushed_bytes > spool.max_bytes // 2

    def _take(self) -> list[PendingBatch]:
        """A prefix of the pending entries: durable ones, up to max_flush_calls; a unit alone."""
        synced = self._spool.synced if self._spool is not None else None
        taken: list[PendingBatch] = []
        calls = 0
        for entry in self._pending:
            if synced is not None and entry.end is not None and entry.end > synced:
                break  # not yet fsynced (its request is not acknowledged yet)
            if taken and (calls + len(entry.batch) > self._max_flush_calls or entry.token):
                break
            taken.append(entry)
            calls += len(entry.batch)
            if entry.token is not None:
                break
        del self._pending[: len(taken)]
        self._pending_calls -= calls
        self._in_flight_calls = calls  # still in memory, and back if the flush fails
        return taken

    def _note_peak(self) -> None:
        """Keep the most calls held in memory so far (under the lock)."""
        self.peak_pending_calls = max(self.peak_pending_calls, self.held_calls)

    def _run(self) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                while not self._due(time.monotonic()) and not self._wants_refill():
                    if self._stopping and not self._pending and self._spilled_after is None:
                        self._cond.notify_all()
                        return
                    wait = self._flush_interval
                    if self._pending and self._retry_at:
                        wait = max(0.01, self._retry_at - time.monotonic())
                    self._cond.wait(wait)
                refill = self._wants_refill()
                taken = [] if refill else self._take()
            if refill:
                self._refill()
                continue
            if not taken:
                if self._spool is not None:  # records written but not yet synced: soon
                    time.sleep(0.001)
                continue
            unit = flush_unit(taken, self._spool)
            del taken  # joined into the unit: its batches need not outlive the join
            error = self._writer.write(unit)
            if error is None or self._writer.set_aside(unit, error):
                backoff = 0.5
                with self._cond:
                    self._in_flight_calls = 0
                    self._retry_at = 0.0
                    self._stored += unit.adds
                    self._cond.notify_all()
            else:
                with self._cond:
                    self._in_flight_calls = 0
                    if self._spool is None:  # its callers were answered with the error
                        self._stored += unit.adds
                        self._cond.notify_all()
                    else:  # keep it; the store will be back
                        # Retry exactly this flush, as one unit under the same token: one
                        # of its tables may have landed before the other failed.
                        self._pending.insert(0, unit)
                        self._pending_calls += len(unit.batch)
                        self._retry_at = time.monotonic() + backoff
                        backoff = min(backoff * 2, 30.0)
                        self._cond.notify_all()  # reserve() may spill instead of waiting
                    if self._stopping:
                        return  # what is left stays in the spool for the next start
            del unit  # not kept while the flusher waits for the next flush (a retry keeps it)

    def _wants_refill(self) -> bool:
        """Spilled calls wait and there is room for them (under the lock)."""
        if self._spilled_after is None:
            return False
        if self._stopping and self._retry_at:
            return False  # the store is failing: what is spilled waits for the next start
        return self._pending_calls <= self._max_pending_calls // 2

    def _refill(self) -> None:
        """Read spilled records back from the spool, in order, up to the pending limit."""
        assert self._spool is not None and self._reload is not None
        with self._cond:
            after, upto = self._spilled_after, self._spilled_upto
            room = self._max_pending_calls - self._pending_calls  # nothing in flight: this thread
        assert after is not None and upto is not None
        entries, calls, last = read_spilled(self._spool, self._reload, after, upto, room)
        with self._cond:
            self._pending.extend(entries)
            self._pending_calls += calls
            self._note_peak()
            self.spilled_records += len(entries)
            self._spilled_calls = max(0, self._spilled_calls - calls)
            if last == self._spilled_upto:
                self._spilled_after = self._spilled_upto = None  # caught up
            else:
                self._spilled_after = last
            self._cond.notify_all()
