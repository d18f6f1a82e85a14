"""The mergeable log-bucketed histogram (DDSketch-style) stored per aggregate.

A finite value ``x`` falls in bucket ``k = sign(x) * (ceil(ln|x| / ln γ) + BIAS)``
with ``γ = (1 + α) / (1 - α)`` for the relative accuracy ``α``
(``storage.histogram_accuracy``, default 1 %); ``k = 0`` holds exact zeros.
Keys fit ClickHouse ``Int16``: magnitudes beyond the outermost bucket (about
1e±142 at 1 %) are clamped to it. Every value in bucket ``k`` is within ``α``
of :meth:`LogHistogram.value`, so quantiles read from the histogram are within
``α`` of the true ones, and two histograms merge by adding counts per key
(ClickHouse ``sumMap``) -- if they share ``α``: a store holds one accuracy
(see :mod:`segwatch.collector.store.settings`).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import numpy.typing as npt

__all__ = [
    "BIAS",
    "DEFAULT_ACCURACY",
    "GAMMA",
    "RELATIVE_ACCURACY",
    "LogHistogram",
    "bucket_value",
    "histogram_keys",
    "log_histogram",
]

DEFAULT_ACCURACY = 0.01
RELATIVE_ACCURACY = DEFAULT_ACCURACY  # the default, under its historical name
GAMMA = (1 + DEFAULT_ACCURACY) / (1 - DEFAULT_ACCURACY)
BIAS = 16384
_MAX_INDEX = BIAS - 1  # keeps |k| within 1..32767


class LogHistogram:
    """Bucket keys and representative values for one relative accuracy ``α``."""

    def __init__(self, accuracy: float = DEFAULT_ACCURACY) -> None:
        if not 0 < accuracy < 1:
            raise ValueError(f"the relative accuracy must be between 0 and 1, not {accuracy}")
        self.accuracy = accuracy
        self.gamma = (1 + accuracy) / (1 - accuracy)
        self._ln_gamma = math.log(self.gamma)

    def keys(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int16]:
        """Bucket keys of finite values (the caller has removed NaN and infinities)."""
        magnitude = np.abs(values)
        with np.errstate(divide="ignore"):
            index = np.ceil(np.log(magnitude) / self._ln_gamma)
        np.clip(index, -_MAX_INDEX, _MAX_INDEX, out=index)
        keys = (index + BIAS) * np.sign(values)  # sign 0 turns zeros into key 0
        return keys.astype(np.int16)

    def value(self, key: int) -> float:
        """The value that represents bucket ``key`` (within ``α`` of its members)."""
        if key == 0:
            return 0.0
        index = abs(key) - BIAS
        magnitude = 2 * self.gamma**index / (self.gamma + 1)
        return math.copysign(magnitude, key)


@cache
def log_histogram(accuracy: float = DEFAULT_ACCURACY) -> LogHistogram:
    """The (shared) histogram of one accuracy."""
    return LogHistogram(accuracy)


def histogram_keys(
    values: npt.NDArray[np.float64], accuracy: float = DEFAULT_ACCURACY
) -> npt.NDArray[np.int16]:
    return log_histogram(accuracy).keys(values)


def bucket_value(key: int, accuracy: float = DEFAULT_ACCURACY) -> float:
    return log_histogram(accuracy).value(key)
