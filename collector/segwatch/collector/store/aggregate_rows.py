"""AggregateRows: the rows of ``ml_segment_aggregates``, assembled from numpy arrays.

The aggregator produces, per (model, quantity), arrays over the live segment
groups; :class:`AggregateRowsBuilder` stacks them into columns without a
Python step per row or per map entry: repeated strings become codes into a
dictionary, maps stay (ends, keys, values) arrays. The result encodes
straight into a Native block (:mod:`.native`) and still reads row by row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .native import ArrayColumn, Coded, MapColumn
from .rows import MERGE_LATER, TableRows

__all__ = ["AGGREGATE_COLUMNS", "AGGREGATE_SCHEMA", "AggregateRows", "AggregateRowsBuilder"]

_SUM = "SimpleAggregateFunction(sum, Float64)"
AGGREGATE_SCHEMA = {
    "model_name": "LowCardinality(String)",
    "model_version": "LowCardinality(String)",
    "model_stage": "LowCardinality(String)",
    "bucket_start": "DateTime('UTC')",
    "segment_dim": "LowCardinality(String)",
    "segment_value": "String",
    "quantity": "LowCardinality(String)",
    "count": _SUM,
    "sampled": "SimpleAggregateFunction(sum, UInt64)",
    "missing": _SUM,
    "numeric_count": _SUM,
    "sum": _SUM,
    "sum_sq": _SUM,
    "min": "SimpleAggregateFunction(min, Float64)",
    "max": "SimpleAggregateFunction(max, Float64)",
    "histogram": "SimpleAggregateFunction(sumMap, Map(Int16, Float64))",
    "categories": "SimpleAggregateFunction(sumMap, Map(String, Float64))",
    "exemplar_trace_ids": "SimpleAggregateFunction(groupUniqArrayArray(5), Array(String))",
}
"""Columns of ``ml_segment_aggregates`` and their types, in insert order."""
AGGREGATE_COLUMNS = tuple(AGGREGATE_SCHEMA)

_NUMBERS = ("count", "sampled", "missing", "numeric_count", "sum", "sum_sq", "min", "max")


class AggregateRows(TableRows):
    """Rows of ``ml_segment_aggregates``."""

    table = "ml_segment_aggregates"
    column_names = AGGREGATE_COLUMNS
    column_types = tuple(AGGREGATE_SCHEMA.values())
    insert_settings = MERGE_LATER


@dataclass
class _Dictionary:
    """Distinct strings in first-seen order, for a LowCardinality column."""

    values: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def code(self, value: str) -> int:
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.values)
            self.values.append(value)
        return code

    def codes(self, values: list[str]) -> npt.NDArray[np.int64]:
        return np.array([self.code(v) for v in values], dtype=np.int64)


@dataclass
class _Strings:
    """Strings appended as (codes, local dictionary) pieces; duplicates across pieces are fine."""

    values: list[str] = field(default_factory=list)
    codes: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _last: tuple[list[str], int] | None = None  # the previous piece's dictionary, and its offset

    def add(self, codes: npt.NDArray[np.int64], dictionary: list[str]) -> None:
        if self._last is not None and self._last[0] is dictionary:  # one model's quantities
            self.codes.append(codes + self._last[1])
            return
        self._last = (dictionary, len(self.values))
        self.codes.append(codes + len(self.values))
        self.values.extend(dictionary)

    def column(self) -> Coded:
        """The column (emptying the pieces)."""
        return Coded(_concat(self.codes, np.int64), self.values)


@dataclass(frozen=True)
class GroupEntries:
    """Map entries of some groups: group ``i`` has ``lengths[i]`` consecutive keys and values."""

    lengths: npt.NDArray[np.int64]
    keys: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


@dataclass
class AggregateRowsBuilder:
    """Collects the rows of one aggregation, one (model, quantity) block at a time."""

    _names: _Dictionary = field(default_factory=_Dictionary)  # models, dimensions, quantities
    _model: list[npt.NDArray[np.int64]] = field(default_factory=list)  # 3 codes per block
    _version: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _stage: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _quantity: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _dim: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _bucket: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _numbers: dict[str, list[npt.NDArray[Any]]] = field(
        default_factory=lambda: {name: [] for name in _NUMBERS}
    )
    _segment: _Strings = field(default_factory=_Strings)
    _exemplar: _Strings = field(default_factory=_Strings)
    _hist_lengths: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _hist_keys: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _hist_values: list[npt.NDArray[np.float64]] = field(default_factory=list)
    _cat_lengths: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _cat_keys: _Strings = field(default_factory=_Strings)
    _cat_values: list[npt.NDArray[np.float64]] = field(default_factory=list)

    def add(
        self,
        model: tuple[str, str, str],
        quantity: str,
        *,
        dims: tuple[npt.NDArray[np.int64], list[str]],
        segments: tuple[npt.NDArray[np.int64], list[str]],
        exemplars: tuple[npt.NDArray[np.int64], list[str]],
        bucket_start: npt.NDArray[np.int64],
        numbers: dict[str, npt.NDArray[Any]],
        histogram: GroupEntries,
        categories: GroupEntries,
        category_names: list[str],
    ) -> None:
        """One block of rows: ``dims``, ``segments`` and ``exemplars`` are (codes, dictionary)."""
        n = len(bucket_start)
        names = self._names
        for out, value in zip((self._model, self._version, self._stage, self._quantity),
                              (*model, quantity), strict=True):  # fmt: skip
            out.append(np.full(n, names.code(value), dtype=np.int64))
        dim_codes, dim_names = dims
        self._dim.append(names.codes(dim_names)[dim_codes])
        self._segment.add(*segments)
        self._exemplar.add(*exemplars)
        self._bucket.append(bucket_start)
        for name in _NUMBERS:
            self._numbers[name].append(numbers[name])
        self._hist_lengths.append(histogram.lengths)
        self._hist_keys.append(histogram.keys)
        self._hist_values.append(histogram.values)
        self._cat_lengths.append(categories.lengths)
        self._cat_keys.add(categories.keys, category_names)
        self._cat_values.append(categories.values)

    def build(self) -> AggregateRows:
        """The rows; empties the builder on the way (pieces are freed once joined, so a
        large flush holds its rows about once, not twice)."""
        out = AggregateRows()
        c = out.columns
        names = self._names.values
        for column, parts in (("model_name", self._model), ("model_version", self._version),
                              ("model_stage", self._stage), ("quantity", self._quantity),
                              ("segment_dim", self._dim)):  # fmt: skip
            c[column] = Coded(_concat(parts, np.int64), names)
        c["bucket_start"] = _concat(self._bucket, np.int64)
        c["segment_value"] = self._segment.column()
        for name in _NUMBERS:
            c[name] = _concat(self._numbers[name], np.uint64 if name == "sampled" else np.float64)
        c["histogram"] = MapColumn(
            np.cumsum(_concat(self._hist_lengths, np.int64)).astype(np.uint64),
            _concat(self._hist_keys, np.int16),
            _concat(self._hist_values, np.float64),
        )
        c["categories"] = MapColumn(
            np.cumsum(_concat(self._cat_lengths, np.int64)).astype(np.uint64),
            self._cat_keys.column(),
            _concat(self._cat_values, np.float64),
        )
        exemplars = self._exemplar.column()
        c["exemplar_trace_ids"] = ArrayColumn(
            np.arange(1, len(exemplars) + 1, dtype=np.uint64), exemplars
        )
        return out


def _concat(parts: list[npt.NDArray[Any]], dtype: Any) -> npt.NDArray[Any]:
    """The pieces joined; empties ``parts``."""
    if not parts:
        return np.zeros(0, dtype=dtype)
    # Cast while joining (one pass): histogram keys come as int64 and fit Int16 (they were
    # int16 before the compiled loops counted them).
    joined = np.concatenate(parts, dtype=dtype, casting="unsafe")
    parts.clear()
    return joined
