"""Numeric segments: log, linear and explicit-edge buckets, with special values apart.

Every bucketing maps a float array to integer codes and each code to a label.
``inf`` and ``-inf`` are segments of their own everywhere; log buckets also
give zero its own segment and split negatives by magnitude. NaN is MISSING
(``Column.number_data`` leaves it out before values get here); a NaN given
anyway gets a code and a label of its own rather than a bucket's.
"""

from __future__ import annotations

import itertools
import math
import sys

import numpy as np
import numpy.typing as npt

from segwatch.collector.config.fields import SegmentSpec

__all__ = ["EdgeBuckets", "LinearBuckets", "LogBuckets", "NumericBuckets", "buckets_for"]

# Codes far from any bucket index, for the special segments.
_NAN, _POS_INF, _NEG_INF, _ZERO = 1 << 40, (1 << 40) + 1, (1 << 40) + 2, (1 << 40) + 3
_SPECIAL_LABELS = {_NAN: "NaN", _POS_INF: "inf", _NEG_INF: "-inf", _ZERO: "0"}
_NEGATIVE = 1 << 20  # log buckets of negative values: code = exponent - _NEGATIVE
_LIMIT = 1 << 30  # linear bucket indices are clamped to ±_LIMIT
_SMALLEST = 5e-324  # the smallest positive double
_MAX_POWERS = 1 << 16  # log buckets keep their base's powers in a table up to this size


def _number(value: float) -> str:
    return f"{value:g}"


class NumericBuckets:
    """Base: special values; subclasses bucket the finite ones."""

    def codes(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        finite = np.isfinite(values)
        if finite.all():  # the usual column: no special value to look for
            return self._finite_codes(values)
        codes = np.empty(values.shape, dtype=np.int64)
        codes[finite] = self._finite_codes(values[finite])
        codes[np.isnan(values)] = _NAN
        codes[values == math.inf] = _POS_INF
        codes[values == -math.inf] = _NEG_INF
        return codes

    def label(self, code: int) -> str:
        special = _SPECIAL_LABELS.get(code)
        return special if special is not None else self._label(code)

    def _finite_codes(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        raise NotImplementedError

    def _label(self, code: int) -> str:
        raise NotImplementedError


class LogBuckets(NumericBuckets):
    """``[b^k, b^(k+1))`` for positives, ``(-b^(k+1), -b^k]`` for negatives, and ``0``."""

    def __init__(self, base: float = 10.0) -> None:
        if not base > 1:
            raise ValueError("the base of log buckets must be greater than 1")
        self.base = base
        self._ln_base = math.log(base)
        # Every exponent a finite magnitude's estimate below can take, one either side,
        # and one more each way should numpy's log round otherwise than math's.
        self._lowest = math.floor(math.log(_SMALLEST) / self._ln_base) - 2
        highest = math.floor(math.log(sys.float_info.max) / self._ln_base) + 3
        self._table: npt.NDArray[np.float64] | None = None
        if highest - self._lowest < _MAX_POWERS:  # a base far from 1
            with np.errstate(over="ignore", under="ignore"):
                self._table = np.power(base, np.arange(self._lowest, highest + 1.0))

    def _finite_codes(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        nonzero = values != 0
        every = bool(nonzero.all())
        magnitude = np.abs(values if every else values[nonzero])
        exponent = np.floor(np.log(magnitude) / self._ln_base).astype(np.int64)
        # Floating point can land one bucket off at exact powers: settle it exactly.
        # (Near the largest doubles the next power is inf: never <= magnitude, as it should be.)
        exponent -= self._base_to(exponent) > magnitude
        exponent += self._base_to(exponent + 1) <= magnitude
        exponent -= (values < 0 if every else values[nonzero] < 0) * _NEGATIVE
        if every:
            return exponent
        codes = np.full(values.shape, _ZERO, dtype=np.int64)
        codes[nonzero] = exponent
        return codes

    def _base_to(self, exponent: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """``base ** exponent``, as ``np.power`` gives it: from the table made once (a gather,
        not a power per value) where the base has one."""
        if self._table is not None:
            return self._table[exponent - self._lowest]
        with np.errstate(over="ignore", under="ignore"):
            return np.power(self.base, exponent.astype(np.float64))

    def _label(self, code: int) -> str:
        if code > -_NEGATIVE // 2:
            return f"[{self._power(code)}, {self._power(code + 1)})"
        exponent = code + _NEGATIVE
        return f"(-{self._power(exponent + 1)}, -{self._power(exponent)}]"

    def _power(self, exponent: int) -> str:
        if self.base == 10 and not -4 <= exponent <= 6:
            return f"1e{exponent}"
        return _number(self.base**exponent)


class LinearBuckets(NumericBuckets):
    """``[origin + k·width, origin + (k+1)·width)``."""

    def __init__(self, width: float, origin: float = 0.0) -> None:
        if not width > 0:
            raise ValueError("the width of linear buckets must be greater than 0")
        self.width, self.origin = width, origin

    def _finite_codes(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        index = np.floor((values - self.origin) / self.width)
        return np.clip(index, -_LIMIT, _LIMIT).astype(np.int64)

    def _label(self, code: int) -> str:
        low = self.origin + code * self.width
        return f"[{_number(low)}, {_number(low + self.width)})"


class EdgeBuckets(NumericBuckets):
    """``< e0``, ``[e0, e1)``, ..., ``>= en`` for increasing edges ``e0 < ... < en``."""

    def __init__(self, edges: tuple[float, ...]) -> None:
        if not edges or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("edges must be strictly increasing")
        self.edges = np.asarray(edges, dtype=np.float64)

    def _finite_codes(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.searchsorted(self.edges, values, side="right").astype(np.int64)

    def _label(self, code: int) -> str:
        edges = self.edges.tolist()
        if code == 0:
            return f"< {_number(edges[0])}"
        if code >= len(edges):
            return f">= {_number(edges[-1])}"
        return f"[{_number(edges[code - 1])}, {_number(edges[code])})"


def buckets_for(spec: SegmentSpec) -> NumericBuckets:
    """The bucketing a segment spec asks for (``auto`` and, until a baseline exists,
    ``quantiles`` use log decades)."""
    if spec.kind == "log":
        return LogBuckets(spec.base)
    if spec.kind == "linear":
        return LinearBuckets(spec.width, spec.origin)
    if spec.kind == "edges":
        return EdgeBuckets(spec.edges)
    return LogBuckets(10.0)
