"""ClickHouseExporter: batched inserts with group commit.

Producers (the flusher of :class:`~segwatch.collector.durable.call_buffer.CallBuffer`
for model calls, receiver threads for labels) hand over rows (any :class:`TableRows`) with
:meth:`ClickHouseExporter.submit` and wait on the returned future; the rows
are checked right there, on the submitting thread, and encoded as Native
blocks while they are inserted, piece by piece (a flush never holds its
encoded copy whole). One writer thread takes everything pending, inserts it
with one insert per table and deduplication token (the blocks of all
submissions, one after the other), and resolves every waiting future, so
concurrent submissions share one insert. If an insert fails, every
submission in it gets the error; the caller decides what to retry (the
flusher retries its flush under the same token; a label request is answered
UNAVAILABLE and the client resends it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from segwatch.clickhouse.store import error_code
from segwatch.collector.metrics import CollectorMetrics

from .rows import TableRows, insert_blocks

__all__ = ["ClickHouseExporter", "ExportStats", "InsertRefusedError"]

_logger = logging.getLogger(__name__)

# ClickHouse errors that say the data of an insert is bad, whatever the store's state:
# retrying it as it is cannot help. Every other error (the store down, busy, short of
# memory or disk, read-only, denied, a replica lost) is the store's, retried as long
# as it takes: a flush is never set aside for an error not listed here.
_DATA_ERROR_CODES = frozenset({
    6,  # CANNOT_PARSE_TEXT
    10,  # NOT_FOUND_COLUMN_IN_BLOCK
    16,  # NO_SUCH_COLUMN_IN_TABLE
    20,  # NUMBER_OF_COLUMNS_DOESNT_MATCH
    27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  # CANNOT_READ_ALL_DATA
    41,  # CANNOT_PARSE_DATETIME
    43,  # ILLEGAL_TYPE_OF_ARGUMENT
    53,  # TYPE_MISMATCH
    69,  # ARGUMENT_OUT_OF_BOUND
    70,  # CANNOT_CONVERT_TYPE
    72,  # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
})  # fmt: skip


class InsertRefusedError(RuntimeError):
    """The store answers, but refused this insert: the data's fault (or a bug), not the store's.

    Retrying it as it is cannot help; the flusher sets such a flush aside after
    a few tries (:mod:`~segwatch.collector.durable.dead_letters`) instead of
    blocking everything behind it.
    """


@dataclass
class ExportStats:
    """Counters of what the exporter wrote (read without a lock: approximate)."""

    flushes: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # by table
    failures: int = 0
    last_error: str = ""


@dataclass
class _TableBlocks:
    column_names: tuple[str, ...]
    settings: dict[str, Any]
    blocks: list[Iterator[bytes]] = field(default_factory=list)
    rows: int = 0


@dataclass
class _Group:
    """Submissions that share a fate: one token's (a flush), or all untokened ones."""

    tables: dict[str, _TableBlocks] = field(default_factory=dict)
    waiters: list[Future[None]] = field(default_factory=list)


@dataclass
class _Pending:
    groups: dict[str | None, _Group] = field(default_factory=dict)

    @property
    def waiters(self) -> list[Future[None]]:
        return [waiter for group in self.groups.values() for waiter in group.waiters]


class ClickHouseExporter:
    """Writes aggregates and raw calls to ClickHouse, one flush at a time.

    ``start()`` starts the writer thread; ``shutdown()`` flushes what is
    pending and stops it. The writer flushes as soon as data is pending; what
    arrives during a flush goes in the next one.
    """

    def __init__(self, client: Client, metrics: CollectorMetrics | None = None) -> None:
        self._client = client
        self._metrics = metrics
        self._pending = _Pending()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.stats = ExportStats()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="segwatch-exporter", daemon=True)
        self._thread.start()

    def submit(self, *rows: TableRows, token: str | None = None) -> Future[None]:
        """Queue rows for the next flush; the future resolves once they are stored.

        With a ``token``, each table's rows go in an insert of their own with
        the deduplication token ``<token>-<table>``: inserting them again with
        the same token (a replay after a crash) adds nothing.
        """
        future: Future[None] = Future()
        encoded = [(part, part.native_chunks()) for part in rows if len(part)]
        with self._cond:
            if self._stopping:
                future.set_exception(RuntimeError("the exporter is shut down"))
                return future
            group = self._pending.groups.setdefault(token, _Group())
            for part, block in encoded:
                pending = group.tables.get(part.table)
                if pending is None:
                    settings = dict(part.insert_settings)
                    if token is not None:
                        settings["insert_deduplication_token"] = f"{token}-{part.table}"
                    pending = group.tables[part.table] = _TableBlocks(part.column_names, settings)
                elif pending.column_names != part.column_names:
                    raise ValueError(f"rows for {part.table} with different columns")
                pending.blocks.append(block)
                pending.rows += len(part)
            group.waiters.append(future)
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
        """Insert every group; a group that fails fails its own submitters only (a label
        insert the store refuses must not count against a flush of model calls)."""
        for group in pending.groups.values():
            self._insert(group)

    def _insert(self, group: _Group) -> None:
        started = time.perf_counter()
        try:
            for table, blocks in group.tables.items():
                insert_blocks(
                    self._client, table, blocks.column_names, blocks.blocks, blocks.settings
                )
        except Exception as exc:
            self.stats.failures += 1
            self.stats.last_error = str(exc)
            if self._metrics is not None:
                self._metrics.insert_failures.inc()
            _logger.error("insert into the store failed: %s", exc)
            error: Exception = exc
            if _data_error(exc) and self._store_answers():
                error = InsertRefusedError(f"the store answers but refused the insert: {exc}")
            for waiter in group.waiters:
                waiter.set_exception(error)
            return
        self.stats.flushes += 1
        if self._metrics is not None:
            self._metrics.inserts.observe(time.perf_counter() - started)
        for table, blocks in group.tables.items():
            self.stats.rows[table] = self.stats.rows.get(table, 0) + blocks.rows
        _logger.debug(
            "flushed %s in %.1f ms",
            ", ".join(f"{b.rows} rows of {t}" for t, b in group.tables.items()),
            (time.perf_counter() - started) * 1e3,
        )
        for waiter in group.waiters:
            waiter.set_result(None)

    def _store_answers(self) -> bool:
        """Whether the store takes a trivial query now (on the writer thread, its client's)."""
        try:
            self._client.command("SELECT 1")
        except Exception:
            return False
        return True


def _data_error(exc: Exception) -> bool:
    """Whether an insert error says the data is bad (not that the store is down or busy)."""
    if isinstance(exc, (OSError, OperationalError)):
        return False
    return error_code(exc) in _DATA_ERROR_CODES
