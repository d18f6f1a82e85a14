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
chunk's inserts carry a deduplication token made of the file's content
digest, the model key, the time column and the chunk's number. Running the
same file again, or again after a crash part-way, stores every chunk once:
ClickHouse drops an insert whose token it has seen among the table's last
10,000 inserts (``non_replicated_deduplication_window``, migration 0006; a
replicated table's own window otherwise). A file that changed is a new
backfill. After writing, the detectors' roll-ups of the hours it touched are
dropped (they are rebuilt from the minute rows on the next run), so a
detector sees backfilled calls even in windows it had rolled up before.

Threads: everything runs on the caller's thread, through the caller's client.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from clickhouse_connect.driver.client import Client

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.model_calls import Column, LabelChunk, ModelCallBatch
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.collector.store.call_rows import call_rows
from segwatch.collector.store.rows import TableRows, insert_blocks
from segwatch.collector.store.settings import check_store_settings

from .profiles import profile_columns, read_table
from .quantiles import refresh_quantile_buckets

__all__ = ["CHUNK_ROWS", "BackfillResult", "backfill_file", "backfill_table", "read_chunks"]

CHUNK_ROWS = 100_000
"""Rows per chunk: per insert, and per deduplication token."""
SERVICE_NAME = "segwatch backfill"
"""``service_name`` of backfilled raw calls: what tells them from calls that came as spans."""
_FIRST_NS = 0  # 1970-01-01: bucket_start is a DateTime, which starts there
_END_NS = int(dt.datetime(2106, 1, 1, tzinfo=dt.timezone.utc).timestamp()) * 10**9
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BackfillResult:
    """What a backfill read and wrote."""

    rows: int
    chunks: int
    first: dt.datetime | None  # the earliest call's time
    last: dt.datetime | None  # the latest
    quantities: dict[str, str]  # column → the field it was read as
    ignored: tuple[str, ...]  # columns that are no field of the model's (the config declares)
    unaggregated: int  # fields left out by segments.max_fields_per_model
    unsegmented: int  # dimensions refused by segments.max_per_model
    raw_calls: bool  # whether ml_model_calls got the calls too

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
        }


@dataclass(frozen=True)
class _Chunk:
    columns: dict[str, Any]  # column name → values (numpy or pandas-backed)
    first_line: int  # the line of its first row in a CSV (the header is line 1)


def read_chunks(path: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[_Chunk]:
    """The file's rows, ``chunk_rows`` at a time, as columns.

    A CSV is read by pandas when it is installed (its C reader: an empty cell
    is MISSING, every other text kept as written), else by
    :func:`~.profiles.read_table`; parquet needs pandas and pyarrow (read whole).
    """
    if path.endswith(".parquet"):
        yield from _table_chunks(read_table(path), chunk_rows)
        return
    try:
        import pandas as pd
    except ImportError:
        yield from _table_chunks(read_table(path), chunk_rows)
        return
    reader = pd.read_csv(path, chunksize=chunk_rows, keep_default_na=False, na_values=[""],
                         low_memory=False)  # fmt: skip
    line = 2
    with reader:
        while True:
            try:
                frame = next(reader)
            except StopIteration:
                return
            except ValueError as exc:  # pandas' ParserError names the line
                raise ValueError(f"{path}: {str(exc).strip()}") from None
            yield _Chunk({str(c): frame[c].to_numpy() for c in frame.columns}, line)
            line += len(frame)


def _table_chunks(data: Any, chunk_rows: int) -> Iterator[_Chunk]:
    """Chunks of a dict of columns or a DataFrame (what read_table returns)."""
    if hasattr(data, "iloc"):
        data = {str(c): data[c].to_numpy() for c in data.columns}
    total = len(next(iter(data.values()))) if data else 0
    for start in range(0, total, chunk_rows):
        yield _Chunk({k: np.asarray(v)[start : start + chunk_rows] for k, v in data.items()},
                     start + 2)  # fmt: skip


def file_digest(path: str) -> tuple[str, int]:
    """The file's SHA-256 (hex) and its line count, in one pass."""
    digest, lines = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            lines += block.count(b"\n")
    return digest.hexdigest(), lines


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
    the bad one are stored, and a rerun after fixing the file stores the rest.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    content, lines = file_digest(path)
    key = "\x1f".join(("backfill-v1", content, model, version, stage, timestamp,
                       str(chunk_rows)))  # fmt: skip
    token = hashlib.sha256(key.encode()).hexdigest()[:32]
    expected = lines - 1 if not path.endswith(".parquet") else 0
    return backfill_table(
        client, read_chunks(path, chunk_rows), model=model, timestamp=timestamp,
        version=version, stage=stage, config=config, token=f"backfill-{token}", source=path,
        expected_rows=expected, progress=progress,
    )  # fmt: skip


def backfill_table(
    client: Client,
    chunks: Iterator[_Chunk],
    *,
    model: str,
    timestamp: str,
    token: str,
    version: str = "",
    stage: str = "serving",
    config: CollectorConfig | None = None,
    source: str = "the table",
    expected_rows: int = 0,
    progress: Progress | None = None,
) -> BackfillResult:
    """Backfill ``chunks``; chunk ``i``'s inserts carry the token ``<token>-<i>-<table>``."""
    if not model:
        raise ValueError("a backfill needs a model name")
    config = config or CollectorConfig()
    check_store_settings(client, config)
    plan = SegmentationPlan(config)
    refresh_quantile_buckets(client, plan)  # live traffic uses a profile's deciles: so do we
    aggregator = SegmentAggregator(plan)
    quantities: dict[str, str] | None = None
    ignored: tuple[str, ...] = ()
    done = count = 0
    first, last = _END_NS, _FIRST_NS - 1
    for count, chunk in enumerate(chunks, start=1):
        if quantities is None:
            quantities, ignored = _quantities(chunk, timestamp, model, config, source)
        start_ns = _start_ns(chunk.columns[timestamp], timestamp, chunk.first_line, source)
        batch = _batch(chunk.columns, quantities, start_ns, (model, version, stage))
        parts: list[TableRows] = [aggregator.aggregate(batch)]
        if config.storage.raw_calls:
            parts.append(call_rows(batch))
        for rows in parts:
            _insert(client, rows, f"{token}-{count - 1}-{rows.table}")
        done += len(start_ns)
        if len(start_ns):
            first, last = min(first, int(start_ns.min())), max(last, int(start_ns.max()))
        if progress is not None:
            progress(done, max(expected_rows, done))
    if quantities is None:
        raise ValueError(f"{source}: no rows")
    if done:
        _drop_rollups(client, first, last)
    return BackfillResult(
        rows=done,
        chunks=count,
        first=_time(first) if done else None,
        last=_time(last) if done else None,
        quantities=quantities,
        ignored=ignored,
        unaggregated=aggregator.unaggregated[model],
        unsegmented=aggregator.unsegmented[model],
        raw_calls=config.storage.raw_calls,
    )


def _quantities(
    chunk: _Chunk, timestamp: str, model: str, config: CollectorConfig, source: str
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


def _start_ns(values: Any, column: str, first_line: int, source: str) -> npt.NDArray[np.int64]:
    """Each row's time in Unix nanoseconds: ISO 8601 text (no zone: UTC) or Unix seconds."""
    array = np.asarray(values)
    if array.dtype.kind in "iuf":
        seconds = array.astype(np.float64)
        bad = ~np.isfinite(seconds) | (seconds * 1e9 < _FIRST_NS) | (seconds * 1e9 >= _END_NS)
        ns = np.where(bad, 0, np.round(seconds * 1e9)).astype(np.int64)
    elif array.dtype.kind == "M":
        ns = array.astype("datetime64[ns]").astype(np.int64)
        bad = np.isnat(array) | (ns < _FIRST_NS) | (ns >= _END_NS)
    else:
        ns, bad = _parse_times(array)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{source}:{first_line + row}: column {column!r}: {array[row]!r} is not a time "
            "between 1970 and 2106 (ISO 8601, e.g. 2026-11-26T12:00:00Z, or Unix seconds)"
        )
    return ns


def _parse_times(array: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """ISO 8601 texts → (nanoseconds, bad); pandas' parser when installed, else one by one."""
    try:
        import pandas as pd
    except ImportError:
        pd = None
    if pd is not None:
        parsed = pd.to_datetime(pd.Series(array), utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna().to_numpy()
        # pandas keeps the resolution it parsed (seconds, micro-): nanoseconds asked for.
        ns = np.where(bad, 0, parsed.dt.as_unit("ns").astype("int64").to_numpy())
        ns = ns.astype(np.int64)
    else:
        ns = np.zeros(len(array), dtype=np.int64)
        bad = np.zeros(len(array), dtype=bool)
        for i, text in enumerate(array.tolist()):
            try:
                moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
            except ValueError:
                bad[i] = True
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.timezone.utc)
            ns[i] = int(moment.timestamp()) * 10**9 + moment.microsecond * 1000
    return ns, bad | (ns < _FIRST_NS) | (ns >= _END_NS)


def _batch(
    columns: dict[str, Any],
    quantities: dict[str, str],
    start_ns: npt.NDArray[np.int64],
    model: tuple[str, str, str],
) -> ModelCallBatch:
    """One chunk as the decoded calls of spans would be (no trace: the ids are empty)."""
    n = len(start_ns)
    batch = ModelCallBatch(models=[model])
    batch.model_index = [0] * n
    batch.start_ns = start_ns.tolist()
    batch.duration_ns = [0] * n
    batch.trace_ids, batch.span_ids = [b""] * n, [b""] * n
    batch.operations, batch.prediction_ids = [""] * n, [""] * n
    batch.service_names = [SERVICE_NAME] * n
    batch.weights = [1.0] * n
    for name, quantity in quantities.items():
        if name not in columns:
            continue  # a chunk of a later DataFrame without it: MISSING, as an absent attribute
        table = batch.contexts if quantity.startswith("context.") else batch.quantities
        table[quantity] = _column(columns[name])
    return batch


def _column(values: Any) -> Column:
    """One column's values: numbers and labels apart, NaN and None MISSING (as in live data)."""
    array = np.asarray(values)
    column = Column()
    if array.dtype.kind in "iuf":
        numbers = array.astype(np.float64)
        present = ~np.isnan(numbers)
        rows = np.flatnonzero(present) if not present.all() else np.arange(len(numbers))
        column.number_chunks.append((rows.astype(np.int64), numbers[rows]))
    elif array.dtype.kind == "b":
        rows = np.arange(len(array), dtype=np.int64)
        column.label_chunks.append(LabelChunk(rows, array.astype(np.int64), ["false", "true"]))
    elif not _texts(array, column):
        _mixed(array.astype(object), column)
    return column


def _texts(array: npt.NDArray[Any], column: Column) -> bool:
    """Fill ``column`` from a column of text and MISSING with pandas' C loops, if it is one
    (False: pandas is not installed or the column holds something else)."""
    try:
        import pandas as pd
    except ImportError:
        return False
    if pd.api.types.infer_dtype(array, skipna=True) not in ("string", "empty"):
        return False
    codes, labels = pd.factorize(array, use_na_sentinel=True)
    codes = np.asarray(codes, dtype=np.int64)
    labels = [str(label) for label in labels]
    if "" in labels:  # an empty text is MISSING, as an empty CSV cell is
        codes[codes == labels.index("")] = -1
    rows = np.flatnonzero(codes >= 0)
    if len(rows):
        column.label_chunks.append(LabelChunk(rows.astype(np.int64), codes[rows], labels))
    return True


def _mixed(objects: npt.NDArray[np.object_], column: Column) -> None:
    """Text, numbers, booleans and MISSING (None, NaN, empty text) in one object column."""
    kinds = np.fromiter((_kind(v) for v in objects.tolist()), dtype=np.int8, count=len(objects))
    numbers_at = np.flatnonzero(kinds == 1)
    if len(numbers_at):
        values = np.array(objects[numbers_at].tolist(), dtype=np.float64)
        column.number_chunks.append((numbers_at.astype(np.int64), values))
    labels_at = np.flatnonzero(kinds == 2)
    if len(labels_at):
        labels = [_text(v) for v in objects[labels_at].tolist()]
        column.label_chunks.append(LabelChunk.of(labels_at.astype(np.int64), labels))


def _kind(value: Any) -> int:
    """0 MISSING, 1 a number, 2 a label."""
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return 0
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    ):
        return 1
    return 2


def _text(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


def _insert(client: Client, rows: TableRows, token: str) -> None:
    """One synchronous insert under ``token``: a second one with it adds nothing."""
    if len(rows):
        settings = {**rows.insert_settings, "insert_deduplication_token": token}
        insert_blocks(client, rows.table, rows.column_names, [rows.native_chunks()], settings)


_ROLLUPS = ("ml_segment_rollup_5m", "ml_segment_rollup_1h")
_SQL_TIME = "%Y-%m-%d %H:%M:%S"


def _drop_rollups(client: Client, first_ns: int, last_ns: int) -> None:
    """Drop the roll-ups of the hours [first, last] touch: a roll-up made before the backfill
    would otherwise stand for those buckets for good (a settled bucket is rolled up once)."""
    hour = 3600 * 10**9
    start, end = first_ns // hour * hour, (last_ns // hour + 1) * hour
    bounds = {"start": _time(start).strftime(_SQL_TIME), "end": _time(end).strftime(_SQL_TIME)}
    for table in _ROLLUPS:
        held = client.query(
            f"SELECT count() FROM {table} WHERE bucket_start >= {{start:DateTime('UTC')}} "
            "AND bucket_start < {end:DateTime('UTC')}",
            parameters=bounds,
        ).result_rows[0][0]
        if held:
            client.command(
                f"ALTER TABLE {table} DELETE WHERE bucket_start >= {{start:DateTime('UTC')}} "
                "AND bucket_start < {end:DateTime('UTC')} SETTINGS mutations_sync = 2",
                parameters=bounds,
            )


def _time(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns // 10**9, dt.timezone.utc).replace(
        microsecond=ns % 10**9 // 1000
    )
