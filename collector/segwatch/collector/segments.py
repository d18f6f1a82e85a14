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
import math
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .columns import Column

__all__ = [
    "ALL",
    "MISSING",
    "OTHER",
    "CategoryVocabulary",
    "SegmentDimension",
    "decade_label",
    "factorize",
    "positions_in",
    "segment_dimension",
    "whole_model",
]

MISSING = "MISSING"
OTHER = "__other__"
ALL = "__all__"

# Integer codes for the numeric special segments; decades use their exponent.
_ZERO, _NAN, _POS_INF, _NEG_INF = 10_000, 10_001, 10_002, 10_003
_NEGATIVE_OFFSET = 1_000  # (-10^(e+1), -10^e] gets code e - 1000 ... kept apart from positives


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


def decade_label(code: int) -> str:
    """Human label of a numeric segment code (see :func:`_numeric_codes`)."""
    special = {_ZERO: "0", _NAN: "NaN", _POS_INF: "inf", _NEG_INF: "-inf"}
    if code in special:
        return special[code]
    if code >= -_NEGATIVE_OFFSET // 2:
        return f"[{_power(code)}, {_power(code + 1)})"
    exponent = code + _NEGATIVE_OFFSET
    return f"(-{_power(exponent + 1)}, -{_power(exponent)}]"


def _power(exponent: int) -> str:
    value = 10.0**exponent
    return f"{value:g}" if -4 <= exponent <= 6 else f"1e{exponent}"


def _numeric_codes(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Segment code per value: the decade exponent, or a special code."""
    codes = np.empty(values.shape, dtype=np.int64)
    finite = np.isfinite(values)
    nonzero = finite & (values != 0)
    magnitude = np.abs(values[nonzero])
    exponent = np.floor(np.log10(magnitude)).astype(np.int64)
    # log10 can land one decade off at exact powers of ten; settle it exactly.
    exponent -= (10.0**exponent > magnitude).astype(np.int64)
    exponent += (10.0 ** (exponent + 1) <= magnitude).astype(np.int64)
    negative = values[nonzero] < 0
    exponent[negative] -= _NEGATIVE_OFFSET
    codes[nonzero] = exponent
    codes[finite & (values == 0)] = _ZERO
    codes[np.isnan(values)] = _NAN
    codes[values == math.inf] = _POS_INF
    codes[values == -math.inf] = _NEG_INF
    return codes


def segment_dimension(
    name: str,
    column: Column,
    rows: npt.NDArray[np.int64],
    vocabulary: CategoryVocabulary,
) -> SegmentDimension:
    """Assign each of ``rows`` (batch row numbers of one model) a segment of ``name``.

    ``rows`` must be sorted; rows absent from the column are MISSING.
    """
    n = len(rows)
    labels: list[str] = [MISSING]
    codes = np.zeros(n, dtype=np.int64)  # 0 = MISSING
    # Map batch row numbers to positions within this model's rows.
    number_rows, numbers = column.number_data()
    if len(number_rows):
        position, found = positions_in(rows, number_rows)
        if found.any():
            numeric = _numeric_codes(numbers[found])
            distinct, inverse = np.unique(numeric, return_inverse=True)
            codes[position[found]] = inverse + len(labels)
            labels.extend(decade_label(int(c)) for c in distinct)
    label_rows, all_labels = column.label_data()
    if len(label_rows):
        position, found = positions_in(rows, label_rows)
        if found.any():
            labels_found = [all_labels[i] for i in np.flatnonzero(found).tolist()]
            values, inverse = factorize(labels_found)
            counts = np.bincount(inverse, minlength=len(values))
            kept = vocabulary.observe(values, counts.tolist())
            segment_of = [value if value in kept else OTHER for value in values]
            segment_labels = sorted(set(segment_of))
            label_code = {label: i + len(labels) for i, label in enumerate(segment_labels)}
            mapping = np.fromiter(
                (label_code[s] for s in segment_of), dtype=np.int64, count=len(segment_of)
            )
            codes[position[found]] = mapping[inverse]
            labels.extend(segment_labels)
    return SegmentDimension(name, labels, codes)


def factorize(values: list[str]) -> tuple[list[str], npt.NDArray[np.int64]]:
    """Distinct values in first-seen order, and each value's index among them.

    A dict does this in one pass; ``np.unique`` on an object array sorts
    Python strings and is several times slower.
    """
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return list(index), np.asarray(codes, dtype=np.int64)


def positions_in(
    rows: npt.NDArray[np.int64], wanted: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """For each batch row in ``wanted``: its position in the sorted ``rows``, and whether found."""
    if not len(wanted) or not len(rows):
        return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
    position = np.minimum(np.searchsorted(rows, wanted), len(rows) - 1)
    return position, rows[position] == wanted
