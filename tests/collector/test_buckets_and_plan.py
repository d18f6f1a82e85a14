"""Numeric buckets, and the aggregator following the config's segmentation plan."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config import parse_config
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.segment.buckets import EdgeBuckets, LinearBuckets, LogBuckets
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.instrumentation import monitor


def _labels(buckets, values: list[float]) -> list[str]:  # type: ignore[no-untyped-def]
    return [buckets.label(int(c)) for c in buckets.codes(np.asarray(values, dtype=float))]


def test_log_buckets_any_base() -> None:
    assert _labels(LogBuckets(2), [1, 3, 4, 0.5, 0, -3, math.nan, -math.inf]) == [
        "[1, 2)", "[2, 4)", "[4, 8)", "[0.5, 1)", "0", "(-4, -2]", "NaN", "-inf",
    ]  # fmt: skip
    assert _labels(LogBuckets(10), [1e-7, 999.999, 1000]) == [
        "[1e-7, 1e-6)", "[100, 1000)", "[1000, 10000)",
    ]  # fmt: skip


@pytest.mark.parametrize("base", [10.0, 2.0, 1.5, math.e, 1.1, 1e10, 1.01])
def test_log_bucket_exponents_are_exact_at_every_power(base: float) -> None:
    """A value lands in [b^k, b^(k+1)) with b^k as np.power gives it, exactly at and beside
    every power of the base across the normal doubles; the table of powers (bases far from
    1: not 1.01) gives what np.power per value gives everywhere, subnormals, zeros,
    negatives and special values included; a column's codes are its values' one by one."""
    with np.errstate(over="ignore", under="ignore"):
        powers = np.power(base, np.arange(-1100.0, 1100.0))
    powers = powers[np.isfinite(powers) & (powers > 0)]
    rng = np.random.default_rng(18)
    values = np.concatenate([
        powers, np.nextafter(powers, 0), np.nextafter(powers, np.inf),
        rng.lognormal(0, 60, 20_000), [5e-324, 1e-310, 2.2e-308, 1.7976931348623157e308],
    ])  # fmt: skip
    buckets = LogBuckets(base)
    normal = values[values >= np.finfo(np.float64).tiny]
    codes = buckets.codes(normal)
    with np.errstate(over="ignore"):
        lower, upper = np.power(base, codes.astype(np.float64)), np.power(base, codes + 1.0)
    assert (lower <= normal).all() and (normal < upper).all()

    mixed = np.concatenate([values, -values, [0.0, math.nan, math.inf, -math.inf]])
    rng.shuffle(mixed)
    per_value = LogBuckets(base)
    per_value._table = None  # np.power for every value, as before the table
    assert (buckets.codes(mixed) == per_value.codes(mixed)).all()
    one_by_one = [int(buckets.codes(mixed[i : i + 1])[0]) for i in range(0, len(mixed), 97)]
    assert buckets.codes(mixed)[::97].tolist() == one_by_one


def test_linear_and_edge_buckets() -> None:
    assert _labels(LinearBuckets(10, origin=5), [5, 14.9, 15, -1, math.inf]) == [
        "[5, 15)", "[5, 15)", "[15, 25)", "[-5, 5)", "inf",
    ]  # fmt: skip
    assert _labels(EdgeBuckets((0, 100, 1000)), [-1, 0, 99, 100, 5000]) == [
        "< 0", "[0, 100)", "[0, 100)", "[100, 1000)", ">= 1000",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        EdgeBuckets((1, 1))
    with pytest.raises(ValueError):
        LinearBuckets(0)


CONFIG = """
segments:
  crosses: [[country, device]]
models:
  shop:
    features:
      amount: {type: number, segments: {edges: [10, 100]}}
      country: {type: category, segments: {top: 2}}
      device: {type: category}
      user_id: {type: category, segment: false}
"""


def test_aggregator_follows_the_plan(recorder) -> None:
    model = monitor("shop", tracer_provider=recorder.provider)
    rows = [
        ("BR", "ios", 5.0), ("BR", "web", 50.0), ("US", "ios", 500.0),
        ("US", "ios", 20.0), ("DE", "web", 7.0), ("FR", "web", 70.0),
    ]  # fmt: skip
    for i, (country, device, amount) in enumerate(rows):
        with model.call(start_time=10**18, end_time=10**18 + 1) as call:
            call.features(country=country, device=device, amount=amount, user_id=f"u{i}")
    aggregator = SegmentAggregator(SegmentationPlan(parse_config(CONFIG)))
    out = aggregator.aggregate(decode_request(recorder.request()))
    c = out.columns
    segments: dict[str, set[str]] = {}
    for dim, value in zip(c["segment_dim"], c["segment_value"], strict=True):
        segments.setdefault(dim, set()).add(value)
    assert segments["feature.amount"] == {"< 10", "[10, 100)", ">= 100"}
    assert segments["feature.country"] == {"BR", "US", "__other__"}  # top 2
    assert "feature.user_id" not in segments  # segment: false
    assert "BR × ios" in segments["feature.country×feature.device"]
    assert "__other__ × web" in segments["feature.country×feature.device"]
    assert aggregator.folded[("shop", "feature.country")] == 2  # DE and FR
    # user_id is still measured, its many values folded so the maps stay bounded.
    user_ids = [
        c["categories"][i] for i in range(len(out))
        if c["segment_dim"][i] == "__all__" and c["quantity"][i] == "feature.user_id"
    ]  # fmt: skip
    assert sum(user_ids[0].values()) == 6 and len(user_ids[0]) <= 21
