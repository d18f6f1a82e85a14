"""volume on a thousand clean runs: the Poisson p of a segment's calls is valid.

One model per seed, four segments of feature.g with usual shares 40/30/20/10 %
of the model's calls; every 5 minutes the model gets Poisson(1000) calls, split
among the segments multinomially, in the baseline (6 hours, written as one
row) and in the window alike. A seed's segments share the model's calls, so
one segment per seed (s3, the smallest) gives the independent p-values.

volume's p is a Poisson tail of a count (P(X <= calls seen)), computed where
the segment got fewer calls than expected (threshold 0): discrete, and
conservative by design (given the model's calls, a segment's are binomial,
with less spread than Poisson), so it is held to P(p <= a) <= a at every
level, and to not being uselessly conservative where it matters (p <= 0.05 at
least a third as often as 5 %).
"""

from __future__ import annotations

import numpy as np
from test_calibration import (
    assert_at_most_nominal,
    assert_false_finding_share,
    compact_buckets,
    insert_aggregates,
    per_seed,
    roll_up_for,
    rows_tested,
    seeds_with_findings,
    spec_named,
)

SEEDS = 1000
SHARES = (0.4, 0.3, 0.2, 0.1)
CALLS = 1000  # a model's mean calls per 5 minutes


def _traffic(client, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    spec = spec_named("volume")
    buckets, scale = compact_buckets(spec, CALLS)
    totals = rng.poisson(np.array(scale, dtype=float), (SEEDS, len(buckets)))
    split = rng.multinomial(totals, SHARES)  # (seeds, buckets, segments)
    columns: dict[str, list] = {name: [] for name in (  # type: ignore[type-arg]
        "model_name", "bucket_start", "segment_dim", "segment_value", "quantity",
        "count", "sampled", "numeric_count")}  # fmt: skip
    for seed in range(SEEDS):
        segments = [(f"s{k}", split[seed, :, k]) for k in range(len(SHARES))]
        for value, calls in [*segments, ("__all__", totals[seed])]:
            for bucket, n in zip(buckets, calls.tolist(), strict=True):
                columns["model_name"].append(f"volume{seed}")
                columns["bucket_start"].append(bucket)
                columns["segment_dim"].append("__all__" if value == "__all__" else "feature.g")
                columns["segment_value"].append(value)
                columns["quantity"].append("feature.x")
                columns["count"].append(float(n))
                columns["sampled"].append(n)
                columns["numeric_count"].append(float(n))
    insert_aggregates(client, columns)


def test_volume_p_values_are_valid_and_bh_holds_its_rate(client) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1806)
    _traffic(client, rng)
    spec = spec_named("volume", threshold=0.0)
    roll_up_for(client, spec)
    rows = rows_tested(client, spec, "p_value, segment_value")
    p_values = np.array([p for p, segment in rows if segment == "s3"])
    assert len(p_values) == SEEDS
    assert_at_most_nominal(p_values, "volume")
    assert np.mean(p_values <= 0.05) > 0.05 / 3, "volume's p is uselessly conservative"
    found = seeds_with_findings(client, per_seed(spec))
    assert_false_finding_share(len(found), SEEDS, spec.parameters["fdr"], "volume")
