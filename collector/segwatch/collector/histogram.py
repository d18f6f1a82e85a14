"""The mergeable log-bucketed histogram (DDSketch-style) stored per aggregate.

A finite value ``x`` falls in bucket ``k = sign(x) * (ceil(ln|x| / ln γ) + BIAS)``
with ``γ = (1 + α) / (1 - α)`` and relative accuracy ``α = 1 %``; ``k = 0`` holds
exact zeros. Keys fit ClickHouse ``Int16``: magnitudes beyond about 1e±142 are
clamped to the outermost bucket. Every value in bucket ``k`` is within ``α`` of
:func:`bucket_value(k) <bucket_value>`, so quantiles read from the histogram are
within 1 % of the true ones, and two histograms merge by adding counts per key
(ClickHouse ``sumMap``).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["BIAS", "GAMMA", "RELATIVE_ACCURACY", "bucket_value", "histogram_keys"]

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LN_GAMMA = math.log(GAMMA)
BIAS = 16384
_MAX_INDEX = BIAS - 1  # keeps |k| within 1..32767


def histogram_keys(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int16]:
    """Bucket keys of finite values (the caller has removed NaN and infinities)."""
    magnitude = np.abs(values)
    with np.errstate(divide="ignore"):
        index = np.ceil(np.log(magnitude) / LN_GAMMA)
    np.clip(index, -_MAX_INDEX, _MAX_INDEX, out=index)
    keys = (index + BIAS) * np.sign(values)  # sign 0 turns zeros into key 0
    return keys.astype(np.int16)


def bucket_value(key: int) -> float:
    """The value that represents bucket ``key`` (within the relative accuracy of its members)."""
    if key == 0:
        return 0.0
    index = abs(key) - BIAS
    magnitude = 2 * GAMMA**index / (GAMMA + 1)
    return math.copysign(magnitude, key)
