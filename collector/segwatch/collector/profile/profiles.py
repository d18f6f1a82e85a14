"""Baseline profiles from data: a training set through the same segmenter and aggregator.

``segwatch baseline --model M FILE`` (CSV, or parquet when pandas and pyarrow
are installed) and, from Python, :func:`baseline` (a pandas DataFrame or a
dict of columns). Columns named ``output.<x>`` or ``metric.<x>`` are outputs
and metrics; every other column is a feature. Loading a profile again
replaces it. Detectors such as ``psi_drift_training`` compare live windows
with the profile.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from segwatch.collector.aggregate.aggregator import (
    AGGREGATE_COLUMNS,
    AGGREGATE_SCHEMA,
    AggregateRows,
    SegmentAggregator,
)
from segwatch.collector.aggregate.histogram import DEFAULT_ACCURACY, log_histogram
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.model_calls import Column, LabelChunk, ModelCallBatch
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.collector.store.rows import MERGE_LATER, TableRows
from segwatch.collector.store.settings import check_store_settings

__all__ = [
    "BASELINE_COLUMNS",
    "BASELINE_SCHEMA",
    "BaselineRows",
    "baseline",
    "load_profile",
    "quantile_edges",
    "read_table",
    "refresh_quantile_buckets",
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


def _quantity_name(column: str) -> str:
    if column.startswith(("feature.", "output.", "metric.", "context.")):
        return column
    return f"feature.{column}"


def _column(values: Any, first_row: int) -> Column:
    """One data-set column as a :class:`Column` of whole-array chunks (no per-row Python)."""
    array = np.asarray(values)
    rows = np.arange(first_row, first_row + len(array), dtype=np.int64)
    column = Column()
    if array.dtype.kind in "iuf":
        numbers = array.astype(np.float64)
        column.number_chunks.append((rows, numbers))  # NaN stays a value, as in live data
    elif array.dtype.kind == "b":
        column.label_chunks.append(LabelChunk(rows, array.astype(np.int64), ["false", "true"]))
    else:  # objects: numbers, text and None (MISSING) may mix
        objects = array.astype(object).tolist()
        number_at = [i for i, v in enumerate(objects)
                     if isinstance(v, (int, float)) and not isinstance(v, bool)]  # fmt: skip
        label_at = [i for i, v in enumerate(objects)
                    if v is not None and v != "" and not isinstance(v, (int, float))]  # fmt: skip
        if number_at:
            numbers = np.array([objects[i] for i in number_at], dtype=np.float64)
            column.number_chunks.append((rows[number_at], numbers))
        if label_at:
            labels = [_text(objects[i]) for i in label_at]
            column.label_chunks.append(LabelChunk.of(rows[label_at], labels))
    return column


def _text(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


def _batch(columns: dict[str, Any], n: int, model: str, version: str) -> ModelCallBatch:
    batch = ModelCallBatch(models=[(model, version, "training")])
    batch.model_index = [0] * n
    batch.start_ns = [0] * n  # a profile has no time: every row in one bucket
    batch.trace_ids = [b""] * n
    batch.weights = [1.0] * n
    for name, values in columns.items():
        quantity = _quantity_name(name)
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

    Returns the number of rows read.
    """
    if not model:
        raise ValueError("a baseline needs a model name")
    if not name:
        raise ValueError("a baseline needs a name")
    check_store_settings(client, config or CollectorConfig())
    client.command(
        "ALTER TABLE ml_baseline_aggregates DELETE WHERE baseline_name = {name:String} "
        "AND model_name = {model:String} AND model_version = {version:String} "
        "SETTINGS mutations_sync = 2",
        parameters={"name": name, "model": model, "version": version},
    )
    aggregator = SegmentAggregator(SegmentationPlan(config))
    loaded_at = dt.datetime.now(dt.timezone.utc)
    done = 0
    for columns, total in _chunks(data, chunk_rows):
        n = len(next(iter(columns.values()))) if columns else 0
        if not n:
            continue
        rows = _profile_rows(aggregator.aggregate(_batch(columns, n, model, version)), name,
                             loaded_at)  # fmt: skip
        rows.insert_into(client)
        done += n
        if progress is not None:
            progress(done, total)
    return done


def quantile_edges(
    client: Client,
    counts: dict[tuple[str, str], int],
    name: str = "training",
    accuracy: float = DEFAULT_ACCURACY,
) -> dict[tuple[str, str], tuple[float, ...]]:
    """Bucket edges at the profile's quantiles, per (model, numeric feature).

    ``counts`` says how many buckets each (model, feature) wants; the edges
    come from the profile's whole-model histogram (``accuracy``), deduplicated.
    """
    if not counts:
        return {}
    sketch = log_histogram(accuracy)
    rows = client.query(
        "SELECT model_name, quantity, sumMap(histogram) FROM ml_baseline_aggregates "
        "WHERE baseline_name = {name:String} AND segment_dim = '__all__' "
        "AND startsWith(quantity, 'feature.') GROUP BY model_name, quantity",
        parameters={"name": name},
    ).result_rows
    edges: dict[tuple[str, str], tuple[float, ...]] = {}
    for model, quantity, histogram in rows:
        wanted = counts.get((model, quantity))
        if not wanted or not histogram:
            continue
        keys = sorted(histogram)
        cumulative = np.cumsum([histogram[k] for k in keys])
        total = cumulative[-1]
        cuts: list[float] = []
        for i in range(1, wanted):
            index = int(np.searchsorted(cumulative, total * i / wanted))
            value = sketch.value(int(keys[min(index, len(keys) - 1)]))
            if not cuts or value > cuts[-1]:
                cuts.append(value)
        if cuts:
            edges[(model, quantity)] = tuple(cuts)
    return edges


def refresh_quantile_buckets(client: Client, plan: SegmentationPlan, name: str = "training") -> int:
    """Point ``plan`` at the quantiles of profile ``name``; return how many fields use them."""
    fields = client.query(
        "SELECT DISTINCT model_name, quantity FROM ml_baseline_aggregates "
        "WHERE baseline_name = {name:String} AND segment_dim = '__all__' "
        "AND startsWith(quantity, 'feature.')",
        parameters={"name": name},
    ).result_rows
    edges = quantile_edges(client, plan.quantile_counts([(m, q) for m, q in fields]), name,
                           plan.config.storage.histogram_accuracy)  # fmt: skip
    plan.use_quantile_edges(edges)
    return len(edges)


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
