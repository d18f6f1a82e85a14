"""ClickHouseExporter: batched inserts with group commit.

Receiver threads hand over the aggregate rows (and raw model-call rows) of one
request with :meth:`ClickHouseExporter.submit` and wait on the returned future;
one writer thread takes everything pending, inserts it in one insert per
table, and resolves every waiting future. An Export is therefore answered only
once its data is in the store, while concurrent requests share one insert.
If an insert fails, every request in it gets the error (the receiver answers
UNAVAILABLE and the client retries); nothing of a failed flush is kept, so a
retry cannot double-count.

A durable local spool for store outages comes with the production-hardening
work; until then a store outage means retries from the clients.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from .aggregate import AGGREGATE_COLUMNS, AggregateRows
from .calls import CALL_COLUMNS, CallRows

__all__ = ["ClickHouseExporter", "ExportStats"]

_logger = logging.getLogger(__name__)

AGGREGATES_TABLE = "ml_segment_aggregates"
CALLS_TABLE = "ml_model_calls"


@dataclass
class ExportStats:
    """Counters of what the exporter wrote (read without a lock: approximate)."""

    flushes: int = 0
    aggregate_rows: int = 0
    call_rows: int = 0
    failures: int = 0
    last_error: str = ""


@dataclass
class _Pending:
    aggregates: AggregateRows = field(default_factory=AggregateRows)
    calls: CallRows = field(default_factory=CallRows)
    waiters: list[Future[None]] = field(default_factory=list)


class ClickHouseExporter:
    """Writes aggregates and raw calls to ClickHouse, one flush at a time.

    ``start()`` starts the writer thread; ``shutdown()`` flushes what is
    pending and stops it. ``max_wait`` bounds how long data may wait for the
    next flush when the writer is idle (it normally flushes at once).
    """

    def __init__(self, client: Client, max_wait: float = 0.05) -> None:
        self._client = client
        self._max_wait = max_wait
        self._pending = _Pending()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.stats = ExportStats()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="segwatch-exporter", daemon=True)
        self._thread.start()

    def submit(self, aggregates: AggregateRows, calls: CallRows) -> Future[None]:
        """Queue rows for the next flush; the future resolves once they are stored."""
        future: Future[None] = Future()
        with self._cond:
            if self._stopping:
                future.set_exception(RuntimeError("the exporter is shut down"))
                return future
            self._pending.aggregates.extend(aggregates)
            self._pending.calls.extend(calls)
            self._pending.waiters.append(future)
            self._cond.notify()
        return future

    def shutdown(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending.waiters and not self._stopping:
                    self._cond.wait()
                if not self._pending.waiters and self._stopping:
                    return
                pending, self._pending = self._pending, _Pending()
            self._flush(pending)

    def _flush(self, pending: _Pending) -> None:
        started = time.perf_counter()
        try:
            if len(pending.aggregates):
                self._insert(AGGREGATES_TABLE, pending.aggregates.column_data(), AGGREGATE_COLUMNS)
            if len(pending.calls):
                self._insert(CALLS_TABLE, pending.calls.column_data(), CALL_COLUMNS)
        except Exception as exc:
            self.stats.failures += 1
            self.stats.last_error = str(exc)
            _logger.error("insert into the store failed: %s", exc)
            for waiter in pending.waiters:
                waiter.set_exception(exc)
            return
        self.stats.flushes += 1
        self.stats.aggregate_rows += len(pending.aggregates)
        self.stats.call_rows += len(pending.calls)
        _logger.debug(
            "flushed %d aggregate rows, %d calls in %.1f ms",
            len(pending.aggregates),
            len(pending.calls),
            (time.perf_counter() - started) * 1e3,
        )
        for waiter in pending.waiters:
            waiter.set_result(None)

    def _insert(self, table: str, columns: list[list[Any]], names: tuple[str, ...]) -> None:
        self._client.insert(table, columns, column_names=list(names), column_oriented=True)
