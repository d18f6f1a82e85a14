"""Segment assignment: decades, special values, MISSING, top-K folding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segwatch.collector.model_calls import Column
from segwatch.collector.segment.buckets import _SPECIAL_LABELS
from segwatch.collector.segment.segments import (
    _DENSE_RANGE,
    MISSING,
    OTHER,
    CategoryVocabulary,
    _distinct,
    positions_in,
    segment_dimension,
)


def _labels(column: Column, n: int, top_k: int = 20) -> list[str]:
    dimension, _ = segment_dimension(
        "feature.x", column, np.arange(n, dtype=np.int64), CategoryVocabulary(top_k)
    )
    return [dimension.labels[c] for c in dimension.codes]


def test_numbers_fall_in_decades_with_special_segments() -> None:
    values = [0.5, 1.0, 9.99, 10.0, 999.0, 1000.0, -5.0, -10.0, 0.0, math.nan, math.inf, -math.inf]
    column = Column(number_rows=list(range(len(values))), numbers=values)
    assert _labels(column, len(values)) == [
        "[0.1, 1)", "[1, 10)", "[1, 10)", "[10, 100)", "[100, 1000)", "[1000, 10000)",
        "(-10, -1]", "(-100, -10]", "0", "MISSING", "inf", "-inf",  # NaN is MISSING
    ]  # fmt: skip


def test_absent_rows_are_missing_and_labels_are_kept() -> None:
    column = Column(label_rows=[0, 2], labels=["BR", "true"], number_rows=[3], numbers=[5.0])
    assert _labels(column, 5) == ["BR", MISSING, "true", "[1, 10)", MISSING]


def test_categories_beyond_top_k_fold_into_other() -> None:
    labels = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d", "e"]
    column = Column(label_rows=list(range(len(labels))), labels=labels)
    assigned = _labels(column, len(labels), top_k=2)
    assert assigned == ["a"] * 5 + ["b"] * 4 + [OTHER] * 5


def test_vocabulary_keeps_the_most_frequent_and_stays_bounded() -> None:
    vocabulary = CategoryVocabulary(top_k=3, capacity=64)
    for i in range(1000):  # a long tail of one-off values
        vocabulary.observe([f"rare-{i}", "x", "y", "z"], [1, 10, 10, 10])
    kept = vocabulary.observe([], [])
    assert kept == {"x", "y", "z"}
    assert len(vocabulary._counts) <= 64


def test_top_k_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CategoryVocabulary(0)


def test_distinct_codes_are_numpys_unique_whether_counted_or_sorted() -> None:
    """``_distinct`` counts codes spanning less than ``_DENSE_RANGE`` and sorts the rest: both
    give ``np.unique``'s distinct codes and inverse, for bucket indices near and far apart,
    negative ones, and the special values' codes (2^40 on) among them."""
    rng = np.random.default_rng(11)
    special = np.array(sorted(_SPECIAL_LABELS), dtype=np.int64)
    spans = (1, 2, 50, _DENSE_RANGE - 1, _DENSE_RANGE, _DENSE_RANGE + 1, 1 << 21)
    counted = 0
    for case in range(300):
        span = spans[case % len(spans)]
        low = int(rng.integers(-(1 << 21), 1 << 21))
        codes = low + rng.integers(0, span, size=int(rng.integers(1, 400)), dtype=np.int64)
        if case % 3 == 0:  # some inf, -inf, 0 or NaN among the buckets
            codes[rng.random(len(codes)) < 0.2] = rng.choice(special)
        distinct, inverse = _distinct(codes)
        want_distinct, want_inverse = np.unique(codes, return_inverse=True)
        np.testing.assert_array_equal(distinct, want_distinct)
        np.testing.assert_array_equal(inverse, want_inverse)
        np.testing.assert_array_equal(distinct[inverse], codes)
        counted += int(codes.max()) - int(codes.min()) < _DENSE_RANGE
    assert 50 < counted < 250  # both ways were taken


@pytest.mark.parametrize(
    "rows",
    [np.arange(0, 50), np.arange(7, 57), np.array([3, 4, 9, 20, 21, 40]), np.array([5])],
)
def test_positions_in_finds_each_wanted_row_or_says_it_is_not_there(rows) -> None:  # type: ignore[no-untyped-def]
    """Consecutive rows (one model's batch, found by arithmetic) or not (searched), wanted
    rows all inside them or some outside: each row's position where found, and found
    exactly for the rows that are there."""
    rng = np.random.default_rng(4)
    inside = rng.choice(rows, size=30)
    for wanted in (inside, np.concatenate([inside, [0, 2, 60, 99]]),
                   np.concatenate([inside, [-3, 0, 2]]), rows[::-1]):  # fmt: skip
        wanted = np.asarray(wanted, dtype=np.int64)
        position, found = positions_in(rows.astype(np.int64), wanted)
        assert found.tolist() == [w in set(rows.tolist()) for w in wanted.tolist()]
        assert (rows[position[found]] == wanted[found]).all()
