"""Per-segment aggregation of a batch of model calls, columnar with numpy.

For every model, minute bucket, segment (of every dimension, plus ``__all__``)
and quantity, one :class:`AggregateRows` row holds a mergeable state: count,
missing, numeric count, sum, sum of squares, min, max, the log histogram, the
category counts and a few exemplar trace ids. Rows from different batches or
collectors for the same key are merged by ClickHouse (AggregatingMergeTree),
so this module never keeps state between batches except the category
vocabularies.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .decode import Column, ModelCallBatch, ModelKey
from .histogram import histogram_keys
from .segments import (
    CategoryVocabulary,
    positions_in,
    segment_dimension,
    whole_model,
)

__all__ = ["AGGREGATE_COLUMNS", "AggregateRows", "SegmentAggregator"]

NS_PER_MINUTE = 60 * 1_000_000_000

AGGREGATE_COLUMNS = (
    "model_name",
    "model_version",
    "model_stage",
    "bucket_start",
    "segment_dim",
    "segment_value",
    "quantity",
    "count",
    "missing",
    "numeric_count",
    "sum",
    "sum_sq",
    "min",
    "max",
    "histogram",
    "categories",
    "exemplar_trace_ids",
)
"""Column order of :class:`AggregateRows`, as in ``ml_segment_aggregates``."""


@dataclass
class AggregateRows:
    """Aggregate rows in column-oriented form, ready for one insert."""

    columns: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in AGGREGATE_COLUMNS}
    )

    def __len__(self) -> int:
        return len(self.columns["count"])

    def extend(self, other: AggregateRows) -> None:
        for name, values in other.columns.items():
            self.columns[name].extend(values)

    def column_data(self) -> list[list[Any]]:
        return [self.columns[name] for name in AGGREGATE_COLUMNS]


@dataclass
class _Quantity:
    """One quantity's values for the rows of one model, as positions and arrays."""

    name: str
    present: npt.NDArray[np.int64]  # positions with any value
    number_pos: npt.NDArray[np.int64]  # positions with a finite number
    numbers: npt.NDArray[np.float64]
    hist_keys: npt.NDArray[np.int16]
    label_pos: npt.NDArray[np.int64]  # positions with a label (text, bool, NaN, inf)
    label_codes: npt.NDArray[np.int64]
    label_names: list[str]


class SegmentAggregator:
    """Turns :class:`ModelCallBatch` es into :class:`AggregateRows`.

    Thread-safe: receiver threads may call :meth:`aggregate` concurrently; the
    only shared state is the per-dimension category vocabularies.
    """

    def __init__(self, top_k: int = 20) -> None:
        self.top_k = top_k
        self._vocabularies: dict[tuple[str, str], CategoryVocabulary] = {}
        self._lock = threading.Lock()

    def _vocabulary(self, model: str, dimension: str) -> CategoryVocabulary:
        key = (model, dimension)
        vocabulary = self._vocabularies.get(key)
        if vocabulary is None:
            with self._lock:
                vocabulary = self._vocabularies.setdefault(key, CategoryVocabulary(self.top_k))
        return vocabulary

    def aggregate(self, batch: ModelCallBatch) -> AggregateRows:
        out = AggregateRows()
        if not len(batch):
            return out
        model_index = np.asarray(batch.model_index, dtype=np.int64)
        start_ns = np.asarray(batch.start_ns, dtype=np.int64)
        for index, model in enumerate(batch.models):
            rows = np.flatnonzero(model_index == index)
            self._aggregate_model(batch, model, rows, start_ns[rows], out)
        return out

    def _aggregate_model(
        self,
        batch: ModelCallBatch,
        model: ModelKey,
        rows: npt.NDArray[np.int64],
        start_ns: npt.NDArray[np.int64],
        out: AggregateRows,
    ) -> None:
        minutes, minute_codes = np.unique(start_ns // NS_PER_MINUTE, return_inverse=True)
        bucket_seconds = (minutes * 60).tolist()
        quantities = [
            q
            for name, column in sorted(batch.quantities.items())
            if (q := _quantity(name, column, rows)) is not None
        ]
        if not quantities:
            return
        dimensions = [whole_model(len(rows))]
        for name, column in sorted((*batch.quantities.items(), *batch.contexts.items())):
            if name.startswith(("feature.", "context.")):
                vocabulary = self._vocabulary(model[0], name)
                dimension = segment_dimension(name, column, rows, vocabulary)
                if len(dimension.labels) > 1 or dimension.codes.any():
                    dimensions.append(dimension)
        trace_ids = batch.trace_ids
        for dimension in dimensions:
            n_labels = len(dimension.labels)
            groups = minute_codes * n_labels + dimension.codes
            n_groups = len(minutes) * n_labels
            counts = np.bincount(groups, minlength=n_groups)
            live = np.flatnonzero(counts)
            first_rows = _first_row_per_group(groups, n_groups)
            exemplars = [[trace_ids[rows[first_rows[g]]].hex()] for g in live.tolist()]
            bucket_of = [bucket_seconds[g // n_labels] for g in live.tolist()]
            label_of = [dimension.labels[g % n_labels] for g in live.tolist()]
            for quantity in quantities:
                if quantity.name == dimension.name:
                    continue  # a dimension split by itself says nothing new
                _append_quantity(
                    out,
                    model,
                    dimension.name,
                    quantity,
                    groups,
                    n_groups,
                    counts,
                    live,
                    bucket_of,
                    label_of,
                    exemplars,
                )


def _quantity(name: str, column: Column, rows: npt.NDArray[np.int64]) -> _Quantity | None:
    """Positions (within ``rows``) and values of one quantity for one model."""
    number_rows = np.asarray(column.number_rows, dtype=np.int64)
    numbers = np.asarray(column.numbers, dtype=np.float64)
    label_rows = np.asarray(column.label_rows, dtype=np.int64)
    labels = column.labels
    number_pos, number_found = positions_in(rows, number_rows)
    label_pos, label_found = positions_in(rows, label_rows)
    if not number_found.any() and not label_found.any():
        return None
    numbers = numbers[number_found]
    number_pos = number_pos[number_found]
    finite = np.isfinite(numbers)
    label_values: list[str] = [labels[i] for i in np.flatnonzero(label_found).tolist()]
    label_positions = label_pos[label_found]
    if not finite.all():  # NaN and infinities are counted as categories
        odd = ~finite
        label_values.extend(_special_name(v) for v in numbers[odd].tolist())
        label_positions = np.concatenate([label_positions, number_pos[odd]])
        numbers, number_pos = numbers[finite], number_pos[finite]
    if label_values:
        names, codes = np.unique(np.asarray(label_values, dtype=object), return_inverse=True)
        label_names = [str(n) for n in names.tolist()]
    else:
        codes, label_names = np.zeros(0, dtype=np.int64), []
    return _Quantity(
        name=name,
        present=np.unique(np.concatenate([number_pos, label_positions])),
        number_pos=number_pos,
        numbers=numbers,
        hist_keys=histogram_keys(numbers),
        label_pos=label_positions,
        label_codes=codes.astype(np.int64),
        label_names=label_names,
    )


def _special_name(value: float) -> str:
    if value != value:
        return "nan"
    return "inf" if value > 0 else "-inf"


def _first_row_per_group(groups: npt.NDArray[np.int64], n_groups: int) -> npt.NDArray[np.int64]:
    first = np.full(n_groups, len(groups), dtype=np.int64)
    np.minimum.at(first, groups, np.arange(len(groups), dtype=np.int64))
    return first


def _pairs_by_group(
    group: npt.NDArray[np.int64], key: npt.NDArray[np.int64], live: npt.NDArray[np.int64]
) -> dict[int, tuple[list[int], list[int]]]:
    """(keys, counts) per group, for the groups in ``live``."""
    if not len(group):
        return {}
    span = int(key.max()) + 1 if len(key) else 1
    combined, counts = np.unique(group * span + key, return_counts=True)
    owners = combined // span
    keys = combined % span
    bounds = np.searchsorted(owners, live)
    ends = np.searchsorted(owners, live, side="right")
    result: dict[int, tuple[list[int], list[int]]] = {}
    for g, lo, hi in zip(live.tolist(), bounds.tolist(), ends.tolist(), strict=True):
        if hi > lo:
            result[g] = (keys[lo:hi].tolist(), counts[lo:hi].tolist())
    return result


_HIST_SHIFT = 32768  # Int16 keys shifted to non-negative for combined codes


def _append_quantity(
    out: AggregateRows,
    model: ModelKey,
    dimension: str,
    quantity: _Quantity,
    groups: npt.NDArray[np.int64],
    n_groups: int,
    counts: npt.NDArray[np.int64],
    live: npt.NDArray[np.int64],
    bucket_of: list[int],
    label_of: list[str],
    exemplars: list[list[str]],
) -> None:
    present = np.bincount(groups[quantity.present], minlength=n_groups)
    number_groups = groups[quantity.number_pos]
    values = quantity.numbers
    numeric_count = np.bincount(number_groups, minlength=n_groups)
    sums = np.bincount(number_groups, weights=values, minlength=n_groups)
    sum_sq = np.bincount(number_groups, weights=values * values, minlength=n_groups)
    minima = np.full(n_groups, np.inf)
    maxima = np.full(n_groups, -np.inf)
    np.minimum.at(minima, number_groups, values)
    np.maximum.at(maxima, number_groups, values)
    histograms = _pairs_by_group(
        number_groups, quantity.hist_keys.astype(np.int64) + _HIST_SHIFT, live
    )
    categories = _pairs_by_group(groups[quantity.label_pos], quantity.label_codes, live)
    names = quantity.label_names
    c = out.columns
    n = len(live)
    c["model_name"].extend([model[0]] * n)
    c["model_version"].extend([model[1]] * n)
    c["model_stage"].extend([model[2]] * n)
    c["bucket_start"].extend(bucket_of)
    c["segment_dim"].extend([dimension] * n)
    c["segment_value"].extend(label_of)
    c["quantity"].extend([quantity.name] * n)
    c["count"].extend(counts[live].tolist())
    c["missing"].extend((counts[live] - present[live]).tolist())
    c["numeric_count"].extend(numeric_count[live].tolist())
    c["sum"].extend(sums[live].tolist())
    c["sum_sq"].extend(sum_sq[live].tolist())
    c["min"].extend(minima[live].tolist())
    c["max"].extend(maxima[live].tolist())
    empty: tuple[list[int], list[int]] = ([], [])
    for g in live.tolist():
        keys, key_counts = histograms.get(g, empty)
        c["histogram"].append({k - _HIST_SHIFT: n_ for k, n_ in zip(keys, key_counts, strict=True)})
        labels, label_counts = categories.get(g, empty)
        c["categories"].append({names[k]: n_ for k, n_ in zip(labels, label_counts, strict=True)})
    c["exemplar_trace_ids"].extend(exemplars)
