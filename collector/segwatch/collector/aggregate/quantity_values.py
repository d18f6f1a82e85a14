"""One quantity's values over one model's rows, ready for the per-segment loops.

For the rows of one model in a batch, a quantity (a feature, an output, a
metric) becomes positions and arrays: the rows with any value, the finite
numbers with their log-histogram keys (:mod:`.histogram`), and the labels
(text, booleans, NaN and infinities) as codes, folded into the top K of the
field's vocabulary plus ``__other__``. :mod:`.segment_groups` then sums them
per segment; nothing here knows about segments.

Pure functions of their arguments, except that a quantity that is not a
segment dimension updates its vocabulary (which locks itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from segwatch.collector.model_calls import Column
from segwatch.collector.segment.segments import OTHER, CategoryVocabulary, positions_in

from .histogram import LogHistogram

__all__ = ["QuantityValues", "quantity_values"]


@dataclass
class QuantityValues:
    """One quantity's values for the rows of one model, as positions and arrays."""

    name: str
    present: npt.NDArray[np.int64]  # positions with any value
    number_pos: npt.NDArray[np.int64]  # positions with a finite number
    numbers: npt.NDArray[np.float64]
    hist_keys: npt.NDArray[np.int16]
    label_pos: npt.NDArray[np.int64]  # positions with a label (text, bool, NaN, inf)
    label_codes: npt.NDArray[np.int64]
    label_names: list[str]


def quantity_values(
    name: str,
    column: Column,
    rows: npt.NDArray[np.int64],
    vocabulary: CategoryVocabulary,
    observed: bool,
    histogram: LogHistogram,
) -> QuantityValues:
    """Positions (within ``rows``) and values of one quantity for one model."""
    number_rows, numbers = column.number_data()
    label_rows, label_codes, names = column.label_codes()
    number_pos, number_found = positions_in(rows, number_rows)
    label_pos, label_found = positions_in(rows, label_rows)
    if not number_found.all():  # another model's rows too
        numbers, number_pos = numbers[number_found], number_pos[number_found]
    finite = np.isfinite(numbers)
    codes = label_codes[label_found]
    label_positions = label_pos[label_found]
    if not finite.all():  # NaN and infinities are counted as categories
        odd = ~finite
        index = {label: code for code, label in enumerate(names)}
        names = list(names)
        special = [index.setdefault(_special_name(v), len(index)) for v in numbers[odd].tolist()]
        names.extend(list(index)[len(names) :])
        codes = np.concatenate([codes, np.asarray(special, dtype=np.int64)])
        label_positions = np.concatenate([label_positions, number_pos[odd]])
        numbers, number_pos = numbers[finite], number_pos[finite]
    label_names: list[str] = []
    if len(codes):
        codes, label_names = _fold(codes, names, vocabulary, observed)
    return QuantityValues(
        name=name,
        present=_union(number_pos, label_positions, len(rows)),
        number_pos=number_pos,
        numbers=numbers,
        hist_keys=histogram.keys(numbers),
        label_pos=label_positions,
        label_codes=codes,
        label_names=label_names,
    )


def _union(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    """Sorted distinct positions in ``a`` or ``b`` (all below ``n``), without a sort."""
    mask = np.zeros(n, dtype=bool)
    mask[a] = True
    mask[b] = True
    return np.flatnonzero(mask)


def _fold(
    codes: npt.NDArray[np.int64], names: list[str], vocabulary: CategoryVocabulary, observed: bool
) -> tuple[npt.NDArray[np.int64], list[str]]:
    """The labels ``names[codes]`` outside the top K become ``__other__``; maps stay bounded.

    Returns codes into the labels that occur (and ``__other__`` if any was
    folded), in ``names`` order. A dimension's vocabulary was already updated
    when it was segmented (``observed``); other quantities (outputs, fields
    that are not dimensions) update theirs here.
    """
    all_counts = np.bincount(codes, minlength=len(names))
    present = np.flatnonzero(all_counts).tolist()
    if observed:
        kept = vocabulary.kept
    else:
        kept = vocabulary.observe([names[i] for i in present], all_counts[present].tolist())
    keep = kept | _SPECIAL_NAMES
    labels: dict[str, int] = {}
    mapping = np.zeros(len(names), dtype=np.int64)
    mapping[present] = [
        labels.setdefault(names[i] if names[i] in keep else OTHER, len(labels)) for i in present
    ]
    return mapping[codes], list(labels)


_SPECIAL_NAMES = frozenset({"nan", "inf", "-inf"})  # from numbers: never folded


def _special_name(value: float) -> str:
    if value != value:
        return "nan"
    return "inf" if value > 0 else "-inf"
