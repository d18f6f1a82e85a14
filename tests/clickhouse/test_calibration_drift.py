"""psi_drift and version_drift on hundreds of clean runs: calibrated p-values.

One model per seed (500), two segments of feature.g and the whole model, a
number (feature.x, log-normal over a few decades, so few calls share a
histogram key) and a category (feature.c), each MISSING in 3 % of calls:
rows of ml_segment_aggregates, 100 calls per segment and 5 minutes (the
baseline's in one row),
drawn from one distribution throughout. version_drift's seeds are other
models with a shadow version beside the champion. One query of each detector
reads every p-value, one more runs its false-discovery step per seed.

The tests' p-values are checked one by one where they are computed: the
chi-square p of the bins (numbers and categories), uniform, and the KS p of
the fine histogram (numbers), conservative (ties; see below), with their full
survival functions (the detector skips the tail computation for statistics
below their median, which BH at 5 % never rejects). The p the detector reports
for a number, the smaller of the two doubled (Bonferroni), is conservative by
construction, so it is held to P(p <= a) <= a rather than to uniformity; BH
then runs on it.
"""

from __future__ import annotations

import re

import numpy as np
from test_calibration import (
    assert_at_most_nominal,
    assert_false_finding_share,
    assert_uniform,
    bucket_starts,
    clean_traffic,
    compact_buckets,
    per_seed,
    roll_up_for,
    rows_tested,
    run_parameters,
    seeds_with_findings,
    spec_named,
)

SEEDS = 500
SEGMENTS = 2
OFF = {"threshold": 0.0, "rest_threshold": 1e300}  # every p computed, no rest check
COLUMNS = (
    "sw_chi2_sf(chi2, kept_bins - 1), if(numeric, sw_kolmogorov_sf(ks_t), nan), p_value, "
    "segment_value, quantity"
)


def _check(client, spec, prefix: str) -> None:  # type: ignore[no-untyped-def]
    # One segment per seed: the segments of a seed share their bins (the whole
    # model's baseline deciles), so their tests are not independent of each other.
    rows = [row for row in rows_tested(client, spec, COLUMNS) if row[3] == "s0"]
    numbers = [row for row in rows if row[4] == "feature.x"]
    categories = [row for row in rows if row[4] == "feature.c"]
    assert len(numbers) == len(categories) == SEEDS, (prefix, len(numbers), len(categories))
    assert_uniform([row[0] for row in numbers], f"{spec.name} chi-square, numbers")
    assert_uniform([row[0] for row in categories], f"{spec.name} chi-square, categories")
    # KS on the fine histogram: calls that share a key are ties, and the asymptotic
    # (Kolmogorov) p is for continuous values: conservative here (p <= 0.05 in about
    # 3.8 % of clean tests, p <= 0.01 in 0.5 %), never anticonservative.
    assert_at_most_nominal(np.array([row[1] for row in numbers]), f"{spec.name} KS, numbers")
    for rows_of, kind in ((numbers, "numbers"), (categories, "categories")):
        reported = np.array([row[2] for row in rows_of])
        assert_at_most_nominal(reported, f"{spec.name} reported p, {kind}")
    found = seeds_with_findings(client, per_seed(spec))
    assert_false_finding_share(len(found), SEEDS, spec.parameters["fdr"], spec.name)


def test_drift_p_values_are_uniform_and_bh_holds_its_rate(client) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1803)
    spec = spec_named("psi_drift", **OFF)
    buckets, calls = compact_buckets(spec)
    clean_traffic(client, buckets, "drift", rng, seeds=SEEDS, segments=SEGMENTS, calls=calls)
    roll_up_for(client, spec)
    _check(client, spec, "drift")


def test_version_drift_p_values_are_uniform_and_bh_holds_its_rate(client) -> None:  # type: ignore[no-untyped-def]
    """A shadow version beside the champion, both drawn alike, in the same window."""
    rng = np.random.default_rng(1804)
    spec = spec_named("version_drift", **OFF, quantities="^feature\\.")
    window = bucket_starts(spec)[-3:]
    clean_traffic(client, window, "version", rng, seeds=SEEDS, segments=SEGMENTS)
    clean_traffic(
        client, window, "version", rng, seeds=SEEDS, segments=SEGMENTS, version="2", stage="shadow"
    )
    roll_up_for(client, spec)
    _check(client, spec, "version")


def test_the_sentence_names_each_test_and_the_missing_share(client) -> None:  # type: ignore[no-untyped-def]
    """A feature that goes MISSING in a third of calls: psi_drift's sentence says so
    first, and names the test behind each p-value."""
    rng = np.random.default_rng(1807)
    spec = spec_named("psi_drift")
    buckets, calls = compact_buckets(spec)
    clean_traffic(client, buckets[:1], "missing", rng, seeds=1, calls=calls[:1])
    clean_traffic(client, buckets[1:], "missing", rng, seeds=1, calls=calls[1:], missing=0.33)
    roll_up_for(client, spec)
    rows = client.query(spec.sql, parameters=run_parameters(spec)).result_rows
    sentences = {row[6]: row[19] for row in rows if row[4] == "__all__"}
    number, category = sentences["feature.x"], sentences["feature.c"]
    assert number.startswith("feature.x drifted for the whole model: PSI "), number
    for sentence in (number, category):
        assert re.search(
            r"PSI [0-9.]+ > 0\.2, missing [2-4]\.[0-9] % → 3[0-9]\.[0-9] % \(", sentence
        )
    assert ", KS p " in number and ", chi-square p " in number and "the smaller doubled" in number
    assert "chi-square p " in category and "KS" not in category
