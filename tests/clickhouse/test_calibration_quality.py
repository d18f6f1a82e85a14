"""data_quality (data_missing, data_range, data_categories) on hundreds of clean runs.

One model per seed (500), two segments of feature.g and the whole model, the
number and the category of test_calibration.clean_traffic (feature.c with a
long tail of rare values, so values the baseline never saw keep arriving),
each MISSING in 3 % of calls; 6 hours of baseline and a window drawn alike.

Every check's p is a tail of a count, computed where the window's share rose
(threshold 0): the missing check's an exact binomial one (given the calls
missing in both windows), the range and categories checks' a Poisson one (of
a count that is mostly 0). Discrete p-values, held to P(p <= a) <= a at every
level. The missing check had a two-proportion z test: with 3 % missing (9
calls of a window's 300), it gave p <= 0.01 1.6-1.7 times too often (a count
is skewed) and BH let 6.8 % of these seeds report one; it is exact now.
"""

from __future__ import annotations

import numpy as np
from test_calibration import (
    assert_at_most_nominal,
    assert_false_finding_share,
    clean_traffic,
    compact_buckets,
    per_seed,
    roll_up_for,
    rows_tested,
    run_parameters,
    spec_named,
)

from segwatch.clickhouse.detection import DetectorSpec

SEEDS = 500
OFF = {
    "missing_threshold": 0.0, "range_threshold": 0.0, "categories_threshold": 0.0,
    "missing_rest_threshold": 1e300, "range_rest_threshold": 1e300,
    "categories_rest_threshold": 1e300,
}  # fmt: skip


def _p_values(client, spec: DetectorSpec) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Each check's p-values: of every segment for missing (each against its own
    baseline), of segment s0 of each seed otherwise (a seed's segments share the
    whole model's range and categories: not independent)."""
    rows = rows_tested(client, spec, "check, p_value, segment_value, quantity")
    checks: dict[str, list[float]] = {}
    for check, p_value, segment, _ in rows:
        if segment == "s0" or (check == "missing" and segment != "__all__"):
            checks.setdefault(check, []).append(p_value)
    return {check: np.array(values) for check, values in checks.items()}


def test_data_quality_p_values_are_calibrated_and_bh_holds_its_rate(client) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1805)
    spec = spec_named("data_quality", **OFF)
    buckets, calls = compact_buckets(spec)
    clean_traffic(client, buckets, "quality", rng, seeds=SEEDS, segments=2, calls=calls, rare=True)
    roll_up_for(client, spec)
    checks = _p_values(client, spec)
    # missing: both quantities; range: the number; categories: the category
    assert {k: len(v) for k, v in checks.items()} == {
        "missing": 4 * SEEDS, "range": SEEDS, "categories": SEEDS,
    }  # fmt: skip
    for check, values in checks.items():
        assert_at_most_nominal(values, f"data_{check}")
    assert np.mean(checks["categories"] < 1) > 0.5, "new values arrive in most windows"
    rows = per_seed(spec)
    found = client.query(rows.sql, parameters=run_parameters(rows)).result_rows
    for detector in spec.detectors:
        seeds = {row[1] for row in found if row[0] == detector}
        assert_false_finding_share(len(seeds), SEEDS, spec.parameters["fdr"], detector)
