"""Segment assignment: which segment of each dimension every model call falls in.

A dimension is a feature (``feature.country``) or a monitoring context
(``context.language``). Its segments, first cut:

* text and booleans: the value itself, for the ``top_k`` most frequent values
  seen so far; the rest fold into ``__other__`` so cardinality stays bounded;
* numbers: decades (``[10, 100)``, ``(-100, -10]``), with ``0``, ``NaN``,
  ``inf`` and ``-inf`` as segments of their own;
* absent or null: ``MISSING``.

Assignment is columnar: one numpy pass per dimension and batch.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from segwatch.collector.model_calls import Column

from .buckets import LogBuckets, NumericBuckets

__all__ = [
    "ALL",
    "MISSING",
    "OTHER",
    "CategoryVocabulary",
    "SegmentDimension",
    "cross_dimension",
    "positions_in",
    "segment_dimension",
    "whole_model",
]

MISSING = "MISSING"
OTHER = "__other__"
ALL = "__all__"


@dataclass(frozen=True)
class SegmentDimension:
    """Segment labels of one dimension for the rows of one model in a batch."""

    name: str
    labels: list[str]
    codes: npt.NDArray[np.int64]  # codes[row] indexes labels


def whole_model(rows: int) -> SegmentDimension:
    """The ``__all__`` dimension: every call in one segment."""
    return SegmentDimension(ALL, [ALL], np.zeros(rows, dtype=np.int64))


class CategoryVocabulary:
    """Which values of one categorical dimension get a segment of their own.

    Counts every value seen (bounded: when the table exceeds ``capacity`` the
    least frequent half is forgotten, a Misra–Gries-style sketch) and keeps the
    ``top_k`` most frequent. Thread-safe: batches from several receiver threads
    update it.
    """

    def __init__(self, top_k: int, capacity: int | None = None) -> None:
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        self.top_k = top_k
        self.capacity = capacity or max(64, 20 * top_k)
        self._counts: dict[str, int] = {}
        self._kept: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    @property
    def kept(self) -> frozenset[str]:
        """The values kept as segments after the last :meth:`observe`."""
        return self._kept

    def observe(self, values: list[str], counts: list[int]) -> frozenset[str]:
        """Count a batch's distinct values; return the values kept as segments."""
        with self._lock:
            table = self._counts
            for value, count in zip(values, counts, strict=True):
                table[value] = table.get(value, 0) + count
            if len(table) > self.capacity:
                keep = heapq.nlargest(self.capacity // 2, table.items(), key=lambda kv: kv[1])
                self._counts = table = dict(keep)
            if len(table) <= self.top_k:
                self._kept = frozenset(table)
            else:
                self._kept = frozenset(
                    v for v, _ in heapq.nlargest(self.top_k, table.items(), key=lambda kv: kv[1])
                )
            return self._kept


def segment_dimension(
    name: str,
    column: Column,
    rows: npt.NDArray[np.int64],
    vocabulary: CategoryVocabulary,
    buckets: NumericBuckets | None = None,
) -> tuple[SegmentDimension, int]:
    """Assign each of ``rows`` (batch row numbers of one model) a segment of ``name``.

    Numbers fall in ``buckets`` (log decades by default), text in the
    vocabulary's top K. ``rows`` must be sorted; rows absent from the column
    are MISSING. Returns the dimension and how many rows were folded into
    ``__other__``.
    """
    n = len(rows)
    labels: list[str] = [MISSING]
    codes = np.zeros(n, dtype=np.int64)  # 0 = MISSING
    folded = 0
    number_rows, numbers = column.number_data()
    if len(number_rows):
        position, found = positions_in(rows, number_rows)
        if found.any():
            bucketing = buckets or _DECADES
            numeric = bucketing.codes(numbers[found])
            distinct, inverse = _distinct(numeric)
            codes[position[found]] = inverse + len(labels)
            labels.extend(bucketing.label(int(c)) for c in distinct)
    label_rows, label_codes, dictionary = column.label_codes()
    if len(label_rows):
        position, found = positions_in(rows, label_rows)
        if found.any():
            found_codes = label_codes[found]
            all_counts = np.bincount(found_codes, minlength=len(dictionary))
            present = np.flatnonzero(all_counts)  # the dictionary's labels these rows have
            values = [dictionary[i] for i in present.tolist()]
            counts = all_counts[present].tolist()
            kept = vocabulary.observe(values, counts)
            segment_of = [value if value in kept else OTHER for value in values]
            folded = sum(c for v, c in zip(values, counts, strict=True) if v not in kept)
            segment_labels = sorted(set(segment_of))
            label_code = {label: i + len(labels) for i, label in enumerate(segment_labels)}
            mapping = np.zeros(len(dictionary), dtype=np.int64)
            mapping[present] = [label_code[s] for s in segment_of]
            codes[position[found]] = mapping[found_codes]
            labels.extend(segment_labels)
    return SegmentDimension(name, labels, codes), folded


def cross_dimension(first: SegmentDimension, second: SegmentDimension) -> SegmentDimension:
    """The cross of two dimensions: one segment per pair of segments, e.g. ``BR × ios``."""
    combined = first.codes * len(second.labels) + second.codes
    occurs = np.bincount(combined, minlength=len(first.labels) * len(second.labels)) > 0
    distinct = np.flatnonzero(occurs)  # sorted, as np.unique would give, without the sort
    inverse = (np.cumsum(occurs) - 1)[combined]
    width = len(second.labels)
    labels = [f"{first.labels[c // width]} × {second.labels[c % width]}" for c in distinct.tolist()]
    return SegmentDimension(f"{first.name}×{second.name}", labels, inverse.astype(np.int64))


_DECADES = LogBuckets(10.0)
_DENSE_RANGE = 1 << 16  # codes spanning fewer values than this are counted, not sorted


def _distinct(
    codes: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``np.unique(codes, return_inverse=True)``, without its sort when the codes span a
    small range (a bucketing's indices usually do; its special values, far away, do not)."""
    low, high = int(codes.min()), int(codes.max())
    if high - low >= _DENSE_RANGE:
        return np.unique(codes, return_inverse=True)
    shifted = codes - low
    occurs = np.bincount(shifted, minlength=high - low + 1) > 0
    rank = np.cumsum(occurs) - 1
    return np.flatnonzero(occurs) + low, rank[shifted]


def positions_in(
    rows: npt.NDArray[np.int64], wanted: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """For each batch row in ``wanted``: its position in the sorted ``rows``, and whether found."""
    if not len(wanted) or not len(rows):
        return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
    first = int(rows[0])
    if int(rows[-1]) - first == len(rows) - 1:  # consecutive rows (one model's batch): no search
        position = wanted - first
        if int(position.min()) >= 0 and int(position.max()) < len(rows):  # all of them
            return position, np.ones(len(wanted), dtype=bool)
        found = (position >= 0) & (position < len(rows))
        return np.clip(position, 0, len(rows) - 1), found
    position = np.minimum(np.searchsorted(rows, wanted), len(rows) - 1)
    return position, rows[position] == wanted
