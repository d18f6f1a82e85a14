"""Backfill: logged predictions (a table with a time column) → the aggregates spans would make.

``segwatch backfill FILE --model M --timestamp COLUMN`` reads a CSV (parquet
with pandas and pyarrow) of logged model calls, one row per call, and writes
``ml_segment_aggregates`` and ``ml_model_calls`` (unless ``storage.raw_calls``
is off) exactly as the collector would have for the same calls sent as spans
at those times: the same segmentation plan (the config's fields, buckets,
crosses; a training profile's deciles once one is loaded), the same
aggregator and its limits (``segments.max_per_model``,
``max_fields_per_model``), the same rows. Columns map to fields as
``segwatch baseline`` maps them (:func:`~.profiles.profile_columns`: the
config's names, undeclared columns ignored when the model declares fields);
an empty cell (or NaN) is MISSING.

Idempotent: the file is cut into chunks of ``chunk_rows`` rows, and each
chunk's inserts carry a deduplication token made of the chunk's number and
content, the model key and the time column. Running the same file again, or
again after a crash part-way, or after fixing the row a run refused, stores
every chunk once: ClickHouse drops an insert whose token it has seen among
the table's last 10,000 inserts (``non_replicated_deduplication_window``,
migration 0006; a replicated table's own window otherwise). A chunk whose
rows changed is new calls. On an embedded store (``chdb://``) the result counts
the calls of chunks the store already had (:attr:`BackfillResult.already_stored`),
from the engine's ``DuplicatedInsertedBlocks`` counter read around each chunk's
inserts; elsewhere it is None, not counted (see :func:`_counts_duplicates`).
Once a chunk's inserts returned, its 5-minute buckets are marked late
(``ml_late_buckets``): the detectors' roll-ups of them made before are rolled
up again by the next run that reads them, so a detector sees backfilled calls
even in buckets it had rolled up before. A run stopped between a chunk's
inserts and its marks (killed, or its stderr's reader gone) leaves that chunk's
buckets unmarked; running it again stores nothing twice and marks every chunk
again.

Threads: the caller's thread reads and aggregates; one more thread inserts,
through the caller's client, one chunk at a time, while the next chunk is read
and aggregated; where the process may use two cores, two more sum a chunk's
quantities at once (:class:`~segwatch.collector.aggregate.aggregator.SegmentAggregator`'s
executor). The engine's insert and the compiled loops leave the interpreter's
lock free, so on two cores they overlap; the rows are the same either way.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.model_calls import ModelCallBatch
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.collector.store.call_rows import call_rows
from segwatch.collector.store.late_rows import late_bucket_rows
from segwatch.collector.store.rows import TableRows, insert_blocks
from segwatch.collector.store.settings import check_store_settings

from .logged_calls import (
    CHUNK_ROWS,
    LoggedChunk,
    call_times,
    chunk_batch,
    chunk_digest,
    count_lines,
    is_pandas_text,
    read_chunks,
)
from .profiles import profile_columns
from .quantiles import refresh_quantile_buckets

__all__ = ["BackfillResult", "Progress", "backfill_file", "backfill_table", "keep_freed_memory"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BackfillResult:
    """What a backfill read and wrote."""

    rows: int  # calls read and sent to the store
    chunks: int
    first: dt.datetime | None  # the earliest call's time
    last: dt.datetime | None  # the latest
    quantities: dict[str, str]  # column → the field it was read as
    ignored: tuple[str, ...]  # columns that are no field of the model's (the config declares)
    unaggregated: int  # fields left out by segments.max_fields_per_model
    unsegmented: int  # dimensions refused by segments.max_per_model
    raw_calls: bool  # whether ml_model_calls got the calls too
    # Of ``rows``, the calls of chunks the store had (dropped as duplicates); None where the
    # store cannot say (not embedded: :func:`_counts_duplicates`).
    already_stored: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "chunks": self.chunks,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "columns": self.quantities,
            "ignored": list(self.ignored),
            "unaggregated_fields": self.unaggregated,
            "unsegmented_dimensions": self.unsegmented,
            "raw_calls": self.raw_calls,
            "already_stored": self.already_stored,
        }


def keep_freed_memory() -> None:
    """Let glibc's malloc keep the memory a chunk frees for the next chunk.

    Process-wide and permanent: every later allocation of the process, on every thread,
    runs under these settings. Only for a process that ends after the backfill (the
    ``segwatch`` program's own ``segwatch backfill``, the bench); never call it in a
    process that goes on (a collector, a test run, a library's caller).

    By default glibc maps a large block (past 128 KiB at first, 32 MiB at most as it
    adapts) fresh from the kernel and unmaps it when freed, and returns the top of its
    heap to the kernel once 2x that is free: every chunk's arrays (the compiled loops'
    outputs and counters, numpy's temporaries) were then new pages, each faulted in and
    zeroed by the kernel again. Here blocks up to 32 MiB come from the heap, and the
    heap is not trimmed: the pages stay mapped and are reused, and the process keeps its
    peak memory until it ends. Does nothing where malloc has no ``mallopt`` (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def backfill_file(
    client: Client,
    path: str,
    *,
    model: str,
    timestamp: str,
    version: str = "",
    stage: str = "serving",
    config: CollectorConfig | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> BackfillResult:
    """Backfill the logged model calls of ``path`` (see the module's docstring).

    ``ValueError`` names the file, the column and the line of bad input (no such
    column, a time that is not one, a field that is ambiguous); chunks before
    the bad one are stored, and a rerun after fixing that row stores the rest
    (the chunks before it are the same: their inserts are dropped).
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    expected = count_lines(path) - 1 if not path.endswith(".parquet") else 0
    return backfill_table(
        client, read_chunks(path, chunk_rows), model=model, timestamp=timestamp,
        version=version, stage=stage, config=config, source=path, expected_rows=expected,
        progress=progress,
    )  # fmt: skip


def backfill_table(
    client: Client,
    chunks: Iterator[LoggedChunk],
    *,
    model: str,
    timestamp: str,
    version: str = "",
    stage: str = "serving",
    config: CollectorConfig | None = None,
    source: str = "the table",
    expected_rows: int = 0,
    progress: Progress | None = None,
) -> BackfillResult:
    """Backfill ``chunks``; each chunk's inserts carry a token of its own (:func:`_token`).

    Chunk after chunk: read and aggregated on the caller's thread (its
    quantities summed on two threads where two cores are free), inserted on
    another while the next one is read and aggregated (one insert in flight:
    memory holds two chunks' rows at most), then counted by ``progress(done,
    total)``. On an error every chunk before the bad one is stored before it is
    raised, unless its insert failed too (that error is noted on the one raised).
    """
    if not model:
        raise ValueError("a backfill needs a model name")
    config = config or CollectorConfig()
    check_store_settings(client, config)
    plan = SegmentationPlan(config)
    refresh_quantile_buckets(client, plan)  # live traffic uses a profile's deciles: so do we
    reading = _Reading(chunks, timestamp, (model, version, stage), config, source)
    done = count = 0
    with _Inserts(client, _counts_duplicates(client)) as inserts, _summing_threads() as executor:
        aggregator = SegmentAggregator(plan, executor)
        for count, batch in enumerate(iter(reading.next, None), start=1):
            parts: list[TableRows] = [aggregator.aggregate(batch)]
            if config.storage.raw_calls:
                parts.append(call_rows(batch))
            done = _stored(done, inserts.wait(), expected_rows, progress)
            token = _token(reading.chunk, count - 1, timestamp, (model, version, stage))
            inserts.start(parts, token, len(batch), reading.minutes)
        done = _stored(done, inserts.wait(), expected_rows, progress)
    if reading.quantities is None:
        raise ValueError(f"{source}: no rows")
    return BackfillResult(
        rows=done,
        chunks=count,
        first=_time(reading.first) if done else None,
        last=_time(reading.last) if done else None,
        quantities=reading.quantities,
        ignored=reading.ignored,
        unaggregated=aggregator.unaggregated[model],
        unsegmented=aggregator.unsegmented[model],
        raw_calls=config.storage.raw_calls,
        already_stored=inserts.already_stored,
    )


class _Reading:
    """The chunks as batches, one per :meth:`next`; the columns' fields are settled on the
    first chunk, and the earliest and latest call times kept."""

    def __init__(
        self,
        chunks: Iterator[LoggedChunk],
        timestamp: str,
        model: tuple[str, str, str],
        config: CollectorConfig,
        source: str,
    ) -> None:
        self._chunks, self._timestamp, self._model = chunks, timestamp, model
        self._config, self._source = config, source
        self.quantities: dict[str, str] | None = None
        self.ignored: tuple[str, ...] = ()
        self.first, self.last = 2**63 - 1, -1  # the earliest and latest call, in ns
        self.minutes = np.zeros(0, np.int64)  # the last chunk's minutes (epoch s)
        self.chunk = LoggedChunk({}, 0)  # the last one read
        self._numeric: set[str] = set()  # columns of numbers in the first chunk

    def next(self) -> ModelCallBatch | None:
        chunk = next(self._chunks, None)
        if chunk is None:
            return None
        self.chunk = chunk
        if self.quantities is None:
            self.quantities, self.ignored = _quantities(
                chunk, self._timestamp, self._model[0], self._config, self._source
            )
            self._numeric = {name for name, values in chunk.columns.items()
                             if not is_pandas_text(values)  # text: no number column
                             and np.asarray(values).dtype.kind in "iuf"}  # fmt: skip
        column = chunk.columns[self._timestamp]
        start_ns = call_times(column, self._timestamp, chunk.first_line, self._source)
        self.minutes = np.unique(start_ns // (60 * 10**9) * 60)
        if len(start_ns):
            self.first = min(self.first, int(start_ns.min()))
            self.last = max(self.last, int(start_ns.max()))
        return chunk_batch(chunk.columns, self.quantities, start_ns, self._model, self._numeric)


def _token(chunk: LoggedChunk, index: int, timestamp: str, model: tuple[str, str, str]) -> str:
    """``backfill-<hash>`` of the chunk's number and content, the model key and the time
    column: the same rows backfilled again insert nothing; a file fixed at one row (or grown
    at its end) inserts the chunks that changed, and only those."""
    key = "\x1f".join(("backfill-v1", *model, timestamp, str(index), chunk_digest(chunk)))
    return "backfill-" + hashlib.sha256(key.encode()).hexdigest()[:32]


class _Inserts:
    """Inserts on a thread of their own, one in flight: :meth:`wait` for it (which raises its
    error), then :meth:`start` the next."""

    def __init__(self, client: Client, count_duplicates: bool) -> None:
        self._client, self._count = client, count_duplicates
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segwatch-backfill")
        self._pending: tuple[Future[bool], int] | None = None
        # Calls of the chunks whose every insert was a duplicate; None when not counted.
        self.already_stored: int | None = 0 if count_duplicates else None

    def __enter__(self) -> _Inserts:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._pending is not None:  # an error on the way out: store what came before
                failed = self._pending[0].exception()
                if failed is not None and isinstance(exc[1], BaseException):
                    # The error leaving is the one raised; the insert's is said beside it.
                    exc[1].add_note(f"the insert of the chunk before also failed: {failed!r}")
        finally:
            self._pool.shutdown(wait=True)

    def start(
        self, parts: list[TableRows], token: str, rows: int, minutes: npt.NDArray[np.int64]
    ) -> None:
        """Start inserting ``parts`` (``rows`` calls in the ``minutes``, whose 5-minute
        buckets are marked late once they landed); the previous insert must be done."""
        assert self._pending is None, "one insert at a time: wait() for the last one"
        insert = self._pool.submit(_insert_all, self._client, parts, token, self._count, minutes)
        self._pending = (insert, rows)

    def wait(self) -> int:
        """Wait for the insert in flight; returns its calls (0 if none)."""
        if self._pending is None:
            return 0
        future, rows = self._pending
        self._pending = None
        if future.result() and self.already_stored is not None:
            self.already_stored += rows
        return rows


def _summing_threads() -> ThreadPoolExecutor | nullcontext[None]:
    """Threads to sum a chunk's quantities on, one per core this process may use (two at
    most: the insert thread wants one too); none on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(2, cores or 1)
    if workers < 2:
        return nullcontext()
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segwatch-aggregate")


def _stored(done: int, rows: int, expected: int, progress: Progress | None) -> int:
    """``done`` plus the ``rows`` an insert just stored, counted by ``progress``."""
    if rows and progress is not None:
        progress(done + rows, max(expected, done + rows))
    return done + rows


def _insert_all(
    client: Client, parts: list[TableRows], token: str, count: bool,
    minutes: npt.NDArray[np.int64],
) -> bool:  # fmt: skip
    """Each table's rows in one synchronous insert under ``<token>-<table>``: a second insert
    with it adds nothing; then the 5-minute buckets of ``minutes`` marked late (also when
    the rows were there already: a run stopped before its marks is repaired by running it
    again). With ``count``, True when every insert was such a second one (the engine counted a
    duplicate block for each: see :func:`_duplicates`); else False."""
    duplicated = count
    for part in parts:
        if len(part):
            settings = {**part.insert_settings,
                        "insert_deduplication_token": f"{token}-{part.table}"}  # fmt: skip
            before = _duplicates(client) if count else 0
            insert_blocks(client, part.table, part.column_names, [part.native_chunks()], settings)
            duplicated = duplicated and _duplicates(client) > before
    late_bucket_rows(minutes, time.time(), every=True).insert_into(client)
    return duplicated


def _counts_duplicates(client: Client) -> bool:
    """Whether ``client``'s engine can tell this backfill's dropped inserts: only an embedded
    store's (``chdb://``), the engine of this process, where the backfill is the only writer
    (its store is refused while a collector holds it). ``DuplicatedInsertedBlocks`` is a
    node's counter: on a cluster the Distributed insert is deduplicated on the shards (the
    node inserted to never counts one), behind a load balancer the readings before and after
    may come from different nodes, and through ``segwatch serve`` (or on any shared server)
    another writer's deduplicated replay moves it too."""
    return str(getattr(client, "uri", "")).startswith("chdb://")


def _duplicates(client: Client) -> int:
    """The engine's count of inserted blocks it dropped as duplicates so far (0 if it cannot
    say); read only where :func:`_counts_duplicates`."""
    try:
        rows = client.query(
            "SELECT value FROM system.events WHERE event = 'DuplicatedInsertedBlocks'"
        ).result_rows
    except DatabaseError:
        return 0
    return int(rows[0][0]) if rows else 0


def _quantities(
    chunk: LoggedChunk, timestamp: str, model: str, config: CollectorConfig, source: str
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Every column but the time's, with its field, and the columns ignored; checked once, on
    the first chunk."""
    names = list(chunk.columns)
    if timestamp not in chunk.columns:
        raise ValueError(f"{source}: no column {timestamp!r} (--timestamp); its columns are "
                         f"{', '.join(names)}")  # fmt: skip
    fields = [n for n in names if n != timestamp]
    if not fields:
        raise ValueError(f"{source}: no column besides {timestamp!r}: nothing to backfill")
    try:
        columns = profile_columns(fields, model, config)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return columns.taken, columns.ignored


def _time(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns // 10**9, dt.timezone.utc).replace(
        microsecond=ns % 10**9 // 1000
    )
