"""A table of logged model calls, read in chunks, as the batches its spans would decode to.

What ``segwatch backfill`` reads (:mod:`.backfill` writes it): a CSV (pandas'
C reader when installed, else :func:`~.profiles.read_table`) or parquet,
``chunk_rows`` rows at a time (:func:`read_chunks`); each chunk's time column
as Unix nanoseconds (:func:`call_times`: ISO 8601 text, no zone meaning UTC,
or Unix seconds; a bad time refused with its line); its other columns as a
:class:`~segwatch.collector.model_calls.ModelCallBatch` (:func:`chunk_batch`):
numbers and labels apart, an empty cell, None or NaN MISSING, as an omitted
span attribute is, so the aggregator sees what it would from spans.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from segwatch.collector.model_calls import Column, LabelChunk, ModelCallBatch

from .profiles import read_table

__all__ = [
    "CHUNK_ROWS",
    "SERVICE_NAME",
    "LoggedChunk",
    "call_times",
    "chunk_batch",
    "chunk_digest",
    "count_lines",
    "read_chunks",
]

CHUNK_ROWS = 100_000
"""Rows per chunk: per insert, and per deduplication token."""
SERVICE_NAME = "segwatch backfill"
"""``service_name`` of backfilled raw calls: what tells them from calls that came as spans."""
_FIRST_NS = 0  # 1970-01-01: bucket_start is a DateTime, which starts there
_END_NS = int(dt.datetime(2106, 1, 1, tzinfo=dt.timezone.utc).timestamp()) * 10**9


@dataclass(frozen=True)
class LoggedChunk:
    """Some consecutive rows of a table of logged calls, column by column."""

    columns: dict[str, Any]  # column name → values (numpy or pandas-backed)
    first_line: int  # the line of its first row in a CSV (the header is line 1)


NAN_TEXTS = ["", "nan", "NaN", "NAN", "-nan", "-NaN", "+nan"]
"""Cells that are MISSING: empty, or a NaN as Python's ``float()`` reads it, so a file of
logged calls reads as ``segwatch baseline`` reads the same file (NaN is MISSING); other
texts ("NA", "null") are kept as written."""


def read_chunks(path: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[LoggedChunk]:
    """The file's rows, ``chunk_rows`` at a time, as columns.

    A CSV is read by pandas when it is installed (its C reader: an empty cell
    or a NaN is MISSING (:data:`NAN_TEXTS`), every other text kept as written), else by
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
    reader = pd.read_csv(path, chunksize=chunk_rows, keep_default_na=False,
                         na_values=NAN_TEXTS, low_memory=False)  # fmt: skip
    line = 2
    with reader:
        while True:
            try:
                frame = next(reader)
            except StopIteration:
                return
            except ValueError as exc:  # pandas' ParserError names the line
                raise ValueError(f"{path}: {str(exc).strip()}") from None
            yield LoggedChunk({str(c): _values(frame[c]) for c in frame.columns}, line)
            line += len(frame)


def _values(series: Any) -> Any:
    """A column of a chunk pandas read: numbers as numpy; text as pandas keeps it (Arrow
    strings, missing cells NA), since its own loops factorize and hash that without the
    interpreter's lock, and a numpy array of Python strings costs more to make than what is
    done with it (see :func:`is_pandas_text`)."""
    return series.array if is_pandas_text(series) else series.to_numpy()


def is_pandas_text(values: Any) -> bool:
    """Whether ``values`` is a pandas column (or array) of text: its string dtype, whatever
    holds the strings; the functions here take it where they take a numpy array of them."""
    dtype = getattr(values, "dtype", None)
    return type(dtype).__name__ == "StringDtype" and type(dtype).__module__.startswith("pandas")


def _table_chunks(data: Any, chunk_rows: int) -> Iterator[LoggedChunk]:
    """Chunks of a dict of columns or a DataFrame (what read_table returns)."""
    if hasattr(data, "iloc"):
        data = {str(c): data[c].to_numpy() for c in data.columns}
    total = len(next(iter(data.values()))) if data else 0
    for start in range(0, total, chunk_rows):
        yield LoggedChunk({k: np.asarray(v)[start : start + chunk_rows] for k, v in data.items()},
                     start + 2)  # fmt: skip


def count_lines(path: str) -> int:
    """The file's line count (a CSV's rows and header, for the progress bar)."""
    lines = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            lines += block.count(b"\n")
    return lines


def chunk_digest(chunk: LoggedChunk) -> str:
    """SHA-256 (hex) of the chunk's column names and values: the same rows, the same digest,
    whichever file or run they come from (None and NaN hash alike: both are MISSING)."""
    digest = hashlib.sha256()
    for name, values in chunk.columns.items():
        if is_pandas_text(values):  # what the object array's hash below would give, faster
            digest.update(name.encode() + b"\x1fobject\x1f" + _text_hashes(values).tobytes())
            continue
        array = np.asarray(values)
        digest.update(name.encode() + b"\x1f" + str(array.dtype).encode() + b"\x1f")
        if array.dtype.kind in "biufM":
            digest.update(np.ascontiguousarray(array).tobytes())
            continue
        try:
            import pandas as pd
        except ImportError:
            digest.update("\x1f".join(map(repr, array.tolist())).encode())
            continue
        digest.update(pd.util.hash_array(array.astype(object)).tobytes())
    return digest.hexdigest()


def _text_hashes(values: Any) -> npt.NDArray[np.uint64]:
    """``pd.util.hash_array`` of the column as an object array (missing: 2**64 - 1), from its
    distinct values: the object array's hash factorizes it the same way first."""
    import pandas as pd

    codes, distinct = pd.factorize(values, use_na_sentinel=True)
    hashes = pd.util.hash_array(np.asarray(distinct, dtype=object), categorize=False)
    codes = np.asarray(codes, dtype=np.int64)
    missing = np.uint64(2**64 - 1)
    if not len(hashes):
        return np.full(len(codes), missing, dtype=np.uint64)
    return np.where(codes >= 0, hashes.take(np.maximum(codes, 0)), missing).astype(np.uint64)


def call_times(values: Any, column: str, first_line: int, source: str) -> npt.NDArray[np.int64]:
    """Each row's time in Unix nanoseconds: ISO 8601 text (no zone: UTC) or Unix seconds."""
    array = None if is_pandas_text(values) else np.asarray(values)
    if array is None:
        ns, bad = _parse_times(values)
    elif array.dtype.kind in "iuf":
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
        shown = (np.asarray(values, dtype=object) if array is None else array)[row]
        raise ValueError(
            f"{source}:{first_line + row}: column {column!r}: {shown!r} is not a time "
            "between 1970 and 2106 (ISO 8601, e.g. 2026-11-26T12:00:00Z, or Unix seconds)"
        )
    return ns


def _parse_times(array: Any) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
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


def chunk_batch(
    columns: dict[str, Any],
    quantities: dict[str, str],
    start_ns: npt.NDArray[np.int64],
    model: tuple[str, str, str],
    numeric: Collection[str] = (),
) -> ModelCallBatch:
    """One chunk as the decoded calls of spans would be (no trace: the ids are empty).

    ``numeric``: columns that held numbers (in the first chunk): where a later
    chunk of one holds text too (``n/a``), each cell that parses is still a
    number there, as a span would send it, and only the rest are labels.
    """
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
        table[quantity] = _column(columns[name], name in numeric)
    return batch


def _column(values: Any, numeric: bool = False) -> Column:
    """One column's values: numbers and labels apart, NaN and None MISSING (as in live data)."""
    column = Column()
    if is_pandas_text(values) and not numeric and _texts(values, column):
        return column
    array = np.asarray(values, dtype=object) if is_pandas_text(values) else np.asarray(values)
    if numeric and array.dtype.kind == "O":
        array = _parsed_numbers(array, column)
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


def _parsed_numbers(array: npt.NDArray[Any], column: Column) -> npt.NDArray[Any]:
    """Add the cells of ``array`` that parse as numbers to ``column``; the others, the
    numbers replaced by None, are returned for labels."""
    try:
        import pandas as pd

        parsed = pd.to_numeric(pd.Series(array), errors="coerce").to_numpy(np.float64)
    except ImportError:
        parsed = np.array([_number(v) for v in array.tolist()], dtype=np.float64)
    rows = np.flatnonzero(~np.isnan(parsed))
    if len(rows):
        column.number_chunks.append((rows.astype(np.int64), parsed[rows]))
    rest = array.astype(object)
    rest[rows] = None
    return rest


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _texts(array: Any, column: Column) -> bool:
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
