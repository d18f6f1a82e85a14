"""FlushWriter: one flush unit into the store, and the spool's marks around it.

Writing a unit aggregates its calls (:mod:`segwatch.collector.aggregate`),
marks its spool range as being flushed, inserts the aggregates (and the raw
calls) in one insert round under the unit's deduplication token, then marks the
5-minute buckets it gave minute rows late (:mod:`~segwatch.collector.store.late_rows`:
the detectors' roll-ups of them are rolled up again; best effort), hands the
spans ``storage.traces`` keeps for ``otel_traces`` to a
:class:`~segwatch.collector.store.span_writer.SpanWriter` (best effort: inserted
later, with other flushes' spans), then marks the range flushed.
A crash between the insert and that mark replays the unit under the same token,
and ClickHouse drops the repeat.

A unit that fails while the store answers (the store refused the data, or
aggregating it raised: a bug) is set aside as a dead letter after
``max_flush_attempts`` tries (:mod:`.dead_letters`), so one bad flush cannot
stop ingestion for good; a failure of the store itself is never a dead
letter, only retried.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import numpy.typing as npt

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.aggregate.exemplars import ExemplarMemory
from segwatch.collector.config.storage import TracesConfig
from segwatch.collector.errors import RetryableError
from segwatch.collector.model_calls import ModelCallBatch
from segwatch.collector.store.aggregate_rows import AggregateRows
from segwatch.collector.store.call_rows import call_rows
from segwatch.collector.store.exporter import ClickHouseExporter, InsertRefusedError
from segwatch.collector.store.late_rows import LateBucketRows, late_bucket_rows
from segwatch.collector.store.rows import TableRows
from segwatch.collector.store.span_writer import SpanWriter
from segwatch.collector.store.trace_rows import (
    TraceRows,
    exemplar_trace_ids,
    sampled_rows,
    trace_rows,
    traced_rows,
)

from .dead_letters import DeadLetters
from .failpoints import aggregate_error, exit_after_insert
from .flush_unit import PendingBatch, unique_token
from .python_turn import PYTHON_TURN
from .spool import Spool

__all__ = ["FlushWriter"]

_logger = logging.getLogger(__name__)


class FlushWriter:
    """Writes flush units for the :class:`.call_buffer.CallBuffer`, one at a time.

    Called on the buffer's flusher thread only, so it holds no lock (other
    threads only read its counters). :meth:`write` blocks that thread for the
    insert, at most ``store_timeout`` seconds.
    """

    def __init__(
        self,
        aggregator: SegmentAggregator,
        exporter: ClickHouseExporter,
        spool: Spool | None,
        *,
        raw_calls: bool,
        traces: TracesConfig,
        store_timeout: float,
        max_flush_attempts: int,
    ) -> None:
        self._aggregator = aggregator
        self._exporter = exporter
        self._spool = spool
        self._raw_calls = raw_calls
        self._traces = traces
        self._store_timeout = store_timeout
        self._max_flush_attempts = max_flush_attempts
        self._dead_letters = DeadLetters(spool.directory) if spool is not None else None
        self.failures = 0
        self.dead_letters = 0  # flushes set aside
        self.dead_letter_calls = 0
        # Where the spans go (storage.traces.write), gathered across flushes, and the
        # exemplars stored flushes wrote (a small segment's group then costs one span a
        # minute, not one a flush).
        self.spans = SpanWriter(exporter) if traces.write else None
        self._exemplars = ExemplarMemory() if traces.write else None
        self._unsent_marks: LateBucketRows | None = None  # see _mark_late

    def write(self, unit: PendingBatch) -> Exception | None:
        """Aggregate and store one flush; None once it is in the store, else what failed."""
        batch = unit.batch
        token = unit.token or unique_token()
        try:
            parts, spans = self._rows(batch)
        except Exception as exc:  # a bug, not bad data: keep the flusher alive, and say so
            self._forget_exemplars()
            if unit.refusals:  # the traceback once per flush is enough
                _logger.error("aggregating %d model calls failed again: %s", len(batch), exc)
            else:
                _logger.exception("aggregating %d model calls failed", len(batch))
            return self._failed(unit, InsertRefusedError(f"aggregating them failed: {exc}"))
        if self._spool is not None and unit.first is not None and unit.end is not None:
            self._spool.begin_flush(unit.first, unit.end)
        try:
            self._exporter.submit(*parts, token=token).result(timeout=self._store_timeout)
        except Exception as exc:
            _logger.warning("flush of %d model calls failed: %s", len(batch), exc)
            self._forget_exemplars()  # its spans are not written: no later row may name them
            return self._failed(unit, exc)
        exit_after_insert()
        self._mark_late(parts[0])
        if spans is not None and self.spans is not None:
            self.spans.add(spans)  # inserted later, with other flushes' (best effort)
            self.spans.lose(spans.unread)  # chosen, but their spool bytes were gone
        if self._exemplars is not None:
            self._exemplars.commit()
        if self._spool is not None and unit.end is not None:
            self._spool.end_flush(unit.end, unit.size)
        for waiter in unit.waiters:
            waiter.set_result(None)
        return None

    def _rows(self, batch: ModelCallBatch) -> tuple[list[TableRows], TraceRows | None]:
        """The flush's rows: what to insert (its aggregates, and its raw calls with
        ``storage.raw_calls``), and its spans (with ``storage.traces.write``)."""
        aggregate_error(batch.models)
        # Each step in its turn, not beside a request's decode (see python_turn); one by
        # one, so that a decode waits for one step at most.
        sampled = None
        with PYTHON_TURN:
            if self._traces.write:  # exemplars from spans written anyway, where a segment has one
                sampled = sampled_rows(batch, self._traces.sample)
            aggregates = self._aggregator.aggregate(
                batch, prefer=sampled, exemplars=self._exemplars
            )
        parts: list[TableRows] = [aggregates]
        if self._raw_calls:
            with PYTHON_TURN:
                parts.append(call_rows(batch))
        spans = None
        if sampled is not None:
            with PYTHON_TURN:
                spans = self._trace_rows(batch, aggregates, sampled)
        return parts, spans

    def _mark_late(self, aggregates: TableRows) -> None:
        """Mark the 5-minute buckets this flush gave minute rows late, now that they landed
        (:mod:`segwatch.collector.store.late_rows`), with the marks earlier flushes could
        not send. Never fails the flush, whose rows are stored (failing it would retry
        them, or set them aside as a dead letter): marks that fail are kept, with their
        times, for the next flush. A crash before the flush's end in the spool replays
        it, and the replay marks them again; marks kept unsent when the process stops
        are lost (the calls then count in the detectors' roll-ups only of buckets rolled
        up after they landed, as before marks existed)."""
        marks = late_bucket_rows(aggregates.columns["bucket_start"], time.time())
        if self._unsent_marks is not None:
            marks = self._unsent_marks.joined(marks)
        if not len(marks):
            return
        try:
            self._exporter.submit(marks).result(timeout=self._store_timeout)
        except Exception as exc:
            self._unsent_marks = marks
            _logger.warning("marking %d buckets that got calls late failed (retried with the "
                            "next flush): %s", len(marks), exc)  # fmt: skip
        else:
            self._unsent_marks = None

    def _forget_exemplars(self) -> None:
        if self._exemplars is not None:
            self._exemplars.discard()

    def _trace_rows(
        self, batch: ModelCallBatch, aggregates: AggregateRows, sampled: npt.NDArray[np.bool_]
    ) -> TraceRows:
        """The spans ``storage.traces`` keeps: the sampled traces' and the exemplars'.

        A failure here (a bug) costs this flush's spans, never its aggregates (see
        :mod:`segwatch.collector.store.span_writer`).
        """
        traces = self._traces
        try:
            exemplars = exemplar_trace_ids(aggregates) if traces.exemplars == "always" else set()
            return trace_rows(batch, traced_rows(batch, traces.sample, exemplars, sampled))
        except Exception:
            _logger.exception("writing the spans of %d model calls failed; flushing without",
                              len(batch))  # fmt: skip
            return TraceRows()

    def _failed(self, unit: PendingBatch, exc: Exception) -> Exception:
        self.failures += 1
        error = RetryableError(f"the store did not take the data: {exc}")
        for waiter in unit.waiters:
            waiter.set_exception(error)
        return exc

    def set_aside(self, unit: PendingBatch, error: Exception) -> bool:
        """Move a flush that keeps failing for a reason not the store's to the dead letters.

        True once it is set aside (the flusher goes on past it); False to retry it.
        """
        if not isinstance(error, InsertRefusedError) or self._dead_letters is None:
            return False
        unit.refusals += 1
        if unit.refusals < self._max_flush_attempts:
            return False
        assert self._spool is not None and unit.end is not None and unit.token is not None
        try:
            letter = self._dead_letters.add(
                self._spool.read(self._spool.flushed, unit.end),
                token=unit.token, reason=str(error), calls=len(unit.batch), end=unit.end,
            )  # fmt: skip
        except OSError:
            _logger.exception("cannot write a dead letter: the flush stays, and is retried")
            return False
        self._spool.end_flush(unit.end, unit.size)
        self.dead_letters += 1
        self.dead_letter_calls += len(unit.batch)
        _logger.error(
            "set aside %d model calls after %d failed flushes (%s): dead letter %s in %s; "
            "'segwatch spool requeue %s' sends them back",
            len(unit.batch), unit.refusals, error, letter.name,
            self._dead_letters.directory, letter.name,
        )  # fmt: skip
        return True
