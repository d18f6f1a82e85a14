"""SpanWriter: the spans for ``otel_traces``, gathered across flushes and inserted in one go.

An insert into ``otel_traces`` costs about the same for 300 spans as for 3,000
(a part, its five skipping indexes, the trace-id view's part, their merges
later): once per flush it was most of what writing spans cost. So the flusher
hands each flush's spans here and goes on; they are inserted (through the
exporter, after the flushes already queued) once ``max_spans`` are waiting or
the oldest has waited ``max_wait`` seconds, and when a reader asks
(:meth:`flush`, which the collector's flush before a query calls) or at
shutdown.

Spans are best effort: the aggregates and raw calls of their flush are stored
already, exactly once; spans still waiting here when the process dies are lost
(a few seconds' worth), and a failed insert costs its spans only (counted in
``lost``, the collector's ``segwatch_otel_traces_spans_lost``; logged). They
are a view for people; the detectors read the aggregates.

Threads: :meth:`add` on the flusher thread, :meth:`flush` on any, one thread of
its own (``segwatch-spans``) for the timer; the exporter's thread inserts.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from concurrent import futures
from concurrent.futures import Future

from .exporter import ClickHouseExporter
from .rows import TableRows

__all__ = ["SpanWriter"]

_logger = logging.getLogger(__name__)


class SpanWriter:
    def __init__(
        self, exporter: ClickHouseExporter, max_spans: int = 5_000, max_wait: float = 5.0
    ) -> None:
        self._exporter = exporter
        self._max_spans = max_spans
        self._max_wait = max_wait
        self._waiting: list[TableRows] = []
        self._count = 0
        self._since = 0.0  # when the oldest waiting spans came
        self._last: Future[None] | None = None  # the last insert: the exporter keeps order
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.lost = 0  # spans not stored: insert failed, or unreadable (..._spans_lost)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="segwatch-spans", daemon=True)
        self._thread.start()

    def add(self, spans: TableRows) -> None:
        """Take a flush's spans; insert what waits if that makes enough."""
        if not len(spans):
            return
        with self._cond:
            if not self._waiting:
                self._since = time.monotonic()
                self._cond.notify()  # the timer starts now
            self._waiting.append(spans)
            self._count += len(spans)
            if self._count >= self._max_spans:
                self._submit()

    def lose(self, count: int) -> None:
        """Count spans that never came here: chosen, but not readable (their flush went on)."""
        with self._cond:
            self.lost += count

    def flush(self, timeout: float = 60.0) -> None:
        """Insert what waits, and wait (at most ``timeout`` s) until every span handed over
        so far is stored or given up."""
        with self._cond:
            self._submit()
            last = self._last
        if last is not None:
            futures.wait([last], timeout=timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Insert what waits (before the exporter shuts down) and stop the timer."""
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _submit(self) -> None:
        """Hand what waits to the exporter, as one insert of several blocks (under the lock)."""
        if not self._waiting:
            return
        parts, count = self._waiting, self._count
        self._waiting, self._count = [], 0
        # A token of its own: the exporter fails a group together, and untokened
        # submissions (labels) must not share a failed span insert's fate.
        future = self._exporter.submit(*parts, token=f"spans-{secrets.token_hex(8)}")
        future.add_done_callback(lambda done: self._stored(done, count))
        self._last = future

    def _stored(self, done: Future[None], count: int) -> None:
        """On the exporter's thread, once an insert of spans is over."""
        error = done.exception()
        if error is not None:
            with self._cond:
                self.lost += count
            _logger.warning("%d spans for otel_traces were not stored: %s", count, error)

    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._waiting:
                    self._cond.wait()
                    continue
                left = self._since + self._max_wait - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._submit()
