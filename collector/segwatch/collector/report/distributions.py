"""A segment's distribution in a window and its baseline, rebuilt from the stored aggregates.

The store keeps, per segment and quantity, a log histogram (bucket → calls) and
category counts. :class:`Distribution` holds both periods' buckets as the values
they stand for (within the store's accuracy, 1 % by default) and turns them into
what a plot shows: shares of the period's calls in a few dozen bins, log-spaced
when the values are positive and span more than a decade and a half (amounts,
latencies), even otherwise; or each category's share.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Bins", "Distribution", "Period"]

_DISPLAY_BINS = 40
_LOG_SPAN = 30.0  # max / min beyond which positive values get log-spaced bins


@dataclass(frozen=True)
class Period:
    """One period's (the baseline's or the window's) aggregate of a quantity in a segment."""

    bucket_values: Sequence[float] = ()
    bucket_calls: Sequence[float] = ()
    categories: dict[str, float] = field(default_factory=dict)
    missing: float = 0.0
    calls: float = 0.0

    @property
    def numeric_calls(self) -> float:
        return float(sum(self.bucket_calls))

    def mean(self) -> float:
        """The mean of the numbers, from the histogram (NaN without numbers)."""
        total = self.numeric_calls
        if total <= 0:
            return math.nan
        return (
            sum(v * n for v, n in zip(self.bucket_values, self.bucket_calls, strict=True)) / total
        )

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the numbers, from the histogram (NaN without numbers)."""
        pairs = sorted(zip(self.bucket_values, self.bucket_calls, strict=True))
        target, seen = q * self.numeric_calls, 0.0
        for value, calls in pairs:
            seen += calls
            if seen >= target and calls > 0:
                return value
        return math.nan


@dataclass(frozen=True)
class Bins:
    """Display bins: ``edges`` (one more than the shares) and each period's share per bin."""

    edges: list[float]
    baseline: list[float]
    current: list[float]
    log_scale: bool

    @property
    def centers(self) -> list[float]:
        pairs = zip(self.edges[:-1], self.edges[1:], strict=True)
        if self.log_scale:
            return [math.sqrt(a * b) for a, b in pairs]
        return [(a + b) / 2 for a, b in pairs]


@dataclass(frozen=True)
class Distribution:
    """A quantity in one segment: its baseline and its window."""

    quantity: str
    baseline: Period
    current: Period

    @property
    def numeric(self) -> bool:
        """True when the quantity holds numbers (either period has histogram buckets)."""
        return bool(self.baseline.bucket_values) or bool(self.current.bucket_values)

    def bins(self, count: int = _DISPLAY_BINS) -> Bins:
        """Both periods' numbers in ``count`` shared bins, as shares of each period's numbers."""
        values = [*self.baseline.bucket_values, *self.current.bucket_values]
        low, high = min(values), max(values)
        log_scale = low > 0 and high / low > _LOG_SPAN
        if log_scale:
            a, b = math.log10(low), math.log10(high)
            edges = [10 ** (a + (b - a) * i / count) for i in range(count + 1)]
        elif high > low:
            edges = [low + (high - low) * i / count for i in range(count + 1)]
        else:  # one value: one bin around it
            width = abs(low) * 0.05 or 1.0
            edges = [low - width, low + width]
        return Bins(edges, _shares(self.baseline, edges), _shares(self.current, edges), log_scale)

    def category_shares(self, limit: int = 20) -> tuple[list[str], list[float], list[float]]:
        """The categories (the ``limit`` most frequent over both periods, MISSING last when
        any call lacked the quantity) and each period's share of its calls in them."""
        names = sorted(
            set(self.baseline.categories) | set(self.current.categories),
            key=lambda n: -(self.baseline.categories.get(n, 0) + self.current.categories.get(n, 0)),
        )[:limit]
        shares: list[list[float]] = []
        for period in (self.baseline, self.current):
            total = sum(period.categories.values()) + period.missing
            shares.append([period.categories.get(n, 0) / total if total else 0.0 for n in names])
        if self.baseline.missing or self.current.missing:
            names.append("MISSING")
            for period, column in zip((self.baseline, self.current), shares, strict=True):
                total = sum(period.categories.values()) + period.missing
                column.append(period.missing / total if total else 0.0)
        return names, shares[0], shares[1]


def _shares(period: Period, edges: list[float]) -> list[float]:
    """The period's numbers per bin of ``edges``, as shares of its numbers."""
    counts = [0.0] * (len(edges) - 1)
    for value, calls in zip(period.bucket_values, period.bucket_calls, strict=True):
        index = min(max(bisect.bisect_right(edges, value) - 1, 0), len(counts) - 1)
        counts[index] += calls
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]
