"""Baseline profiles from data: a training set through the same segmenter and aggregator.

``segwatch baseline --model M FILE`` (CSV, or parquet when pandas and pyarrow
are installed) and, from Python, :func:`baseline` (a pandas DataFrame or a
dict of columns). Columns are fields by the config (:func:`profile_columns`:
a declared output ``score`` reads a column ``score``; ``output.score`` always
works); numeric features are bucketed at the edges live traffic will use
(:mod:`.quantiles`); NaN, an empty CSV cell and None are MISSING, as an omitted
span attribute is. Loading a profile again replaces it. ``psi_drift_training``
compares each model's live windows with its profile.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from clickhouse_connect.driver.client import Client

from segwatch.collector.aggregate.aggregator import (
    AGGREGATE_COLUMNS,
    AGGREGATE_SCHEMA,
    AggregateRows,
    SegmentAggregator,
)
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.model_calls import Column, LabelChunk, ModelCallBatch
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.collector.store.rows import MERGE_LATER, TableRows
from segwatch.collector.store.settings import check_store_settings

from .columns import column_quantities
from .quantiles import data_edges, refresh_quantile_buckets, stored_edges
from .staged import delete_staged, staged_name, swap_in

__all__ = [
    "BASELINE_COLUMNS",
    "BASELINE_SCHEMA",
    "BaselineRows",
    "ProfileColumns",
    "baseline",
    "load_profile",
    "profile_columns",
    "read_table",
    "refresh_quantile_buckets",
    "table_columns",
]

BASELINE_SCHEMA = {
    "baseline_name": "LowCardinality(String)",
    **{
        name: AGGREGATE_SCHEMA[name]
        for name in AGGREGATE_COLUMNS
        if name not in ("model_stage", "bucket_start", "exemplar_trace_ids")
    },
    "loaded_at": "SimpleAggregateFunction(max, DateTime64(3, 'UTC'))",
}
"""Columns of ``ml_baseline_aggregates`` and their types, in insert order."""
BASELINE_COLUMNS = tuple(BASELINE_SCHEMA)
CHUNK_ROWS = 50_000
Progress = Callable[[int, int], None]


class BaselineRows(TableRows):
    """Rows of ``ml_baseline_aggregates``."""

    table = "ml_baseline_aggregates"
    column_names = BASELINE_COLUMNS
    column_types = tuple(BASELINE_SCHEMA.values())
    insert_settings = MERGE_LATER


@dataclass(frozen=True)
class ProfileColumns:
    """What a table's columns are taken as: ``taken`` (column → quantity, e.g.
    ``score`` → ``output.score``), and the columns ``ignored``."""

    model: str
    taken: dict[str, str]
    ignored: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for people: what each column was taken as, and what was ignored."""
        taken = ", ".join(
            column if column == quantity else f"{column} as {quantity}"
            for column, quantity in self.taken.items()
        )
        line = f"columns read: {taken or 'none'}"
        if self.ignored:
            line += (f"; ignored (not fields of model {self.model!r} in the config; name one "
                     f"feature.<name> to keep it): {', '.join(self.ignored)}")  # fmt: skip
        return line


def profile_columns(
    columns: list[str], model: str, config: CollectorConfig | None = None
) -> ProfileColumns:
    """Which field each column is (:func:`~.columns.column_quantities`).

    When the config declares fields for ``model``, a bare column name it does not
    declare is ignored (a label, an id), and a table none of whose columns is a
    declared field is refused with ``ValueError``: its names do not match the
    config. Without declared fields every bare name is a feature.
    """
    config = config or CollectorConfig()
    declared = config.models.get(model)
    fields = SegmentationPlan(config).declared_fields(model) if declared else set()
    if not fields:
        return ProfileColumns(model, column_quantities(columns, model, config))
    bare = {name.partition(".")[2] for name in fields}
    kept = [c for c in columns if c in bare or _named_with_kind(c)]
    ignored = tuple(c for c in columns if c not in kept)
    taken = column_quantities(kept, model, config)
    if not fields & set(taken.values()):
        raise ValueError(
            f"no column is a field model {model!r} declares ({', '.join(sorted(fields))}); "
            f"the columns are {', '.join(columns) or 'none'}: name them as the config does "
            "(a declared output score reads a column score, or output.score)"
        )
    return ProfileColumns(model, taken, ignored)


def _named_with_kind(column: str) -> bool:
    kind, dot, rest = column.removeprefix("ml.").partition(".")
    return bool(dot and rest) and kind in ("feature", "output", "metric", "context")


def _missing(value: Any) -> bool:
    """None, an empty cell, NaN and pandas' NA/NaT: MISSING, as an omitted attribute is."""
    if value is None or (isinstance(value, str) and value == ""):
        return True
    if isinstance(value, (float, np.floating)):
        return bool(value != value)
    return type(value).__name__ in ("NAType", "NaTType")


def _column(values: Any, first_row: int) -> Column:
    """One data-set column as a :class:`Column` of whole-array chunks (no per-row Python
    for numbers); MISSING values (:func:`_missing`) are left out, as live data leaves them."""
    array = np.asarray(values)
    rows = np.arange(first_row, first_row + len(array), dtype=np.int64)
    column = Column()
    if array.dtype.kind in "iuf":
        numbers = array.astype(np.float64)
        present = ~np.isnan(numbers)
        column.number_chunks.append((rows[present], numbers[present]))
    elif array.dtype.kind == "b":
        column.label_chunks.append(LabelChunk(rows, array.astype(np.int64), ["false", "true"]))
    else:  # objects: numbers, text and MISSING may mix
        objects = array.astype(object).tolist()
        kept = [i for i, v in enumerate(objects) if not _missing(v)]
        number_at = [i for i in kept if _is_number(objects[i])]
        label_at = [i for i in kept if not _is_number(objects[i])]
        if number_at:
            numbers = np.array([objects[i] for i in number_at], dtype=np.float64)
            column.number_chunks.append((rows[number_at], numbers))
        if label_at:
            labels = [_text(objects[i]) for i in label_at]
            column.label_chunks.append(LabelChunk.of(rows[label_at], labels))
    return column


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _numbers(values: Any) -> npt.NDArray[np.float64]:
    """The finite numbers of a column (for its quantile edges)."""
    array = np.asarray(values)
    if array.dtype.kind in "iuf":
        numbers = array.astype(np.float64)
    elif array.dtype.kind == "O":
        numbers = np.array([v for v in array.tolist() if _is_number(v)], dtype=np.float64)
    else:
        return np.empty(0)
    return numbers[np.isfinite(numbers)]


def _text(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


def _batch(columns: dict[str, Any], n: int, model: str, version: str,
           taken: dict[str, str]) -> ModelCallBatch:  # fmt: skip
    batch = ModelCallBatch(models=[(model, version, "training")])
    batch.model_index = [0] * n
    batch.start_ns = [0] * n  # a profile has no time: every row in one bucket
    batch.trace_ids = [b""] * n
    batch.weights = [1.0] * n
    for name, values in columns.items():
        quantity = taken.get(name)
        if quantity is None:  # ignored
            continue
        table = batch.contexts if quantity.startswith("context.") else batch.quantities
        table[quantity] = _column(values, 0)
    return batch


def _profile_rows(aggregates: AggregateRows, name: str, loaded_at: dt.datetime) -> BaselineRows:
    out = BaselineRows()
    source = aggregates.columns
    for column in BASELINE_COLUMNS:
        if column in source:
            out.columns[column] = source[column]
    n = len(aggregates)
    out.columns["baseline_name"] = [name] * n
    out.columns["loaded_at"] = [loaded_at] * n
    return out


def _chunks(data: Any, chunk_rows: int) -> Iterator[tuple[dict[str, Any], int]]:
    if isinstance(data, dict):
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise ValueError("every column of a baseline must have the same number of rows")
        total = lengths.pop() if lengths else 0
        for start in range(0, total, chunk_rows):
            yield {k: np.asarray(v)[start : start + chunk_rows] for k, v in data.items()}, total
        return
    if hasattr(data, "columns") and hasattr(data, "iloc"):  # pandas DataFrame
        total = len(data)
        for start in range(0, total, chunk_rows):
            part = data.iloc[start : start + chunk_rows]
            yield {str(c): part[c].to_numpy() for c in part.columns}, total
        return
    raise TypeError("a baseline is a pandas DataFrame or a dict of equal-length columns")


def load_profile(
    client: Client,
    data: Any,
    *,
    model: str,
    version: str = "",
    name: str = "training",
    config: CollectorConfig | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> int:
    """Replace profile ``name`` of ``model`` (and ``version``) with one computed from ``data``.

    Columns are fields as :func:`profile_columns` says (``ValueError`` when none is
    one the config declares). Numeric features are bucketed at the edges the other
    versions of this profile were (the first load takes its own quantiles:
    :mod:`.quantiles`), which the collector's plan then uses for live traffic.
    Returns the number of rows read.
    """
    if not model:
        raise ValueError("a baseline needs a model name")
    if not name:
        raise ValueError("a baseline needs a name")
    config = config or CollectorConfig()
    columns = profile_columns(_column_names(data), model, config)
    check_store_settings(client, config)
    plan = SegmentationPlan(config)
    plan.use_quantile_edges(_profile_edges(client, data, plan, columns, name, version))
    aggregator = SegmentAggregator(plan)
    loaded_at = dt.datetime.now(dt.timezone.utc)
    staged = staged_name(name)  # the old profile serves until every row is in (.staged)
    delete_staged(client, name, model, version)  # what a killed load of it left
    done = 0
    try:
        for chunk, total in _chunks(data, chunk_rows):
            n = len(next(iter(chunk.values()))) if chunk else 0
            if not n:
                continue
            batch = _batch(chunk, n, model, version, columns.taken)
            _profile_rows(aggregator.aggregate(batch), staged, loaded_at).insert_into(client)
            done += n
            if progress is not None:
                progress(done, total)
        swap_in(client, staged, name, model, version)
    finally:
        delete_staged(client, name, model, version)
    return done


def _column_names(data: Any) -> list[str]:
    if isinstance(data, dict):
        return [str(name) for name in data]
    if hasattr(data, "columns"):
        return [str(name) for name in data.columns]
    raise TypeError("a baseline is a pandas DataFrame or a dict of equal-length columns")


def _profile_edges(
    client: Client,
    data: Any,
    plan: SegmentationPlan,
    columns: ProfileColumns,
    name: str,
    version: str,
) -> dict[tuple[str, str], tuple[float, ...]]:
    """The quantile edges this load buckets with: those the profile's other versions
    were bucketed with (not ``version``'s, which this load replaces), else the
    quantiles of this data."""
    model = columns.model
    by_quantity = {quantity: column for column, quantity in columns.taken.items()}
    counts = plan.quantile_counts([(model, q) for q in by_quantity if q.startswith("feature.")])
    edges = stored_edges(client, name, [model], counts, replaced_version=version)
    for key, count in counts.items():
        if key not in edges:
            values = data[by_quantity[key[1]]]
            found = data_edges(_numbers(values.to_numpy() if hasattr(values, "to_numpy")
                                        else values), count)  # fmt: skip
            if found:
                edges[key] = found
    return edges


def table_columns(path: str) -> list[str]:
    """The column names of a CSV (its header row) or parquet file, without reading its rows."""
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ValueError("reading parquet needs pandas and pyarrow installed") from exc
        names = pq.ParquetFile(path).schema_arrow.names
        return [n for n in names if not n.startswith("__index_level_")]
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise ValueError(f"{path}: no header row")
    return header


def read_table(path: str) -> Any:
    """A CSV file as a dict of columns (numbers where every value parses), or parquet."""
    if path.endswith(".parquet"):
        try:
            import pandas as pd

            return pd.read_parquet(path)
        except ImportError as exc:
            raise ValueError("reading parquet needs pandas and pyarrow installed") from exc
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: no header row")
        cells: list[list[str]] = [[] for _ in header]
        for line_number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}:{line_number}: {len(row)} fields, the header has "
                                 f"{len(header)}")  # fmt: skip
            for column, cell in zip(cells, row, strict=True):
                column.append(cell)
    return {name: _typed(values) for name, values in zip(header, cells, strict=True)}


def _typed(values: list[str]) -> Any:
    """Numbers when every non-empty cell is one, else text; an empty cell is MISSING."""
    try:
        numbers = [float(v) if v != "" else None for v in values]
    except ValueError:
        return np.array([v if v != "" else None for v in values], dtype=object)
    if None in numbers:
        return np.array(numbers, dtype=object)  # None, not NaN: MISSING is not a value
    return np.asarray(numbers, dtype=np.float64)


def baseline(
    data: Any,
    *,
    model: str,
    version: str = "",
    name: str = "training",
    config: CollectorConfig | None = None,
) -> int:
    """Load a training set (DataFrame or dict of columns) as the profile ``name`` of ``model``.

    Uses the config's store (default ``chdb://./segwatch-data``); while a
    collector holds that embedded store, stop it or load with the CLI.
    """
    from segwatch.clickhouse.migrate import apply_migrations, require_migrated
    from segwatch.clickhouse.store import open_client, parse_dsn

    config = config or CollectorConfig()
    location = parse_dsn(config.storage.dsn)
    client = open_client(location)
    try:
        if location.embedded:  # this process's alone
            apply_migrations(client, exclusive=True)
        else:  # shared: migrated by `segwatch migrate` only
            require_migrated(client)
        return load_profile(client, data, model=model, version=version, name=name, config=config)
    finally:
        client.close()
