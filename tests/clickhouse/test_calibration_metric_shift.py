"""metric_shift and metric_shift_seasonal on hundreds of clean runs: calibrated p-values.

One model per seed, four segments of one dimension each plus the whole model,
written as 5-minute rows of ml_segment_aggregates: every window's mean is the
level plus a window-to-window wobble (sd 0.05, what a baseline's windows show
when traffic varies) plus its calls' sampling noise (100 calls a bucket, sd
0.1: a standard error of 0.006 over a window), so the standard-error floor
rarely binds and the MAD's calibration is what is tested. The seasonal seeds
are other models, with their history a week earlier; one query of each
detector runs every seed of it.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from scipy import stats
from test_calibration import (
    AT,
    assert_at_most_nominal,
    assert_false_finding_share,
    assert_uniform,
    bucket_starts,
    insert_aggregates,
    per_seed,
    roll_up_for,
    rows_tested,
    run_parameters,
    seeds_with_findings,
    spec_named,
)

from segwatch.clickhouse.detection import DetectorSpec

SEEDS = 500
SEGMENTS = 4
CALLS_PER_BUCKET = 100
WOBBLE, NOISE = 0.05, 0.1  # window-to-window sd of the mean; sd of one call's value
OFF = {"threshold": 0.0, "rest_threshold": 1e300}  # every p computed, no rest check
# The p-value the code gave before the calibration, from the same rows: MAD scale
# as is, Student's t with (windows - 1) degrees of freedom.
UNCALIBRATED_P = (
    "sw_student_t_2sf((current_mean - median) / greatest(1.4826 * sw_median(arrayMap("
    "x -> abs(x - median), means)), {min_relative_scale:Float64} * abs(median), standard_error, "
    "1e-12), length(means) - 1)"
)


def _series(  # type: ignore[no-untyped-def]
    client, buckets: list[dt.datetime], prefix: str, rng: np.random.Generator, *,
    seeds: int = SEEDS, segments: int = SEGMENTS, wobble: float = WOBBLE, common: float = 0.0,
    shift: float = 0.0,
) -> None:  # fmt: skip
    """``seeds`` models named ``prefix``<i> with rows in ``buckets`` (history then
    window, 3 buckets a window, window-aligned): each segment's window means wobble
    (sd ``wobble``, plus ``common`` shared by the model's segments), and every segment's
    mean moves by ``shift`` in the last window."""
    windows = len(buckets) // 3
    level = 1 + wobble * rng.standard_normal((seeds, segments, windows))
    level += common * rng.standard_normal((seeds, 1, windows))
    level[:, :, -1] += shift
    level = level.repeat(3, axis=2)
    means = level + NOISE / np.sqrt(CALLS_PER_BUCKET) * rng.standard_normal(level.shape)
    sums = CALLS_PER_BUCKET * means
    squares = CALLS_PER_BUCKET * NOISE**2 + sums**2 / CALLS_PER_BUCKET
    rows = [(f"s{k}", sums[:, k], squares[:, k], CALLS_PER_BUCKET) for k in range(segments)]
    rows.append(("__all__", sums.sum(axis=1), squares.sum(axis=1), CALLS_PER_BUCKET * segments))
    columns: dict[str, list] = {name: [] for name in (  # type: ignore[type-arg]
        "model_name", "bucket_start", "segment_dim", "segment_value", "quantity", "count",
        "sampled", "numeric_count", "sum", "sum_sq")}  # fmt: skip
    n = len(buckets)
    for seed in range(seeds):
        for value, total, square, calls in rows:
            columns["model_name"] += [f"{prefix}{seed}"] * n
            columns["bucket_start"] += buckets
            columns["segment_dim"] += ["feature.g" if value != "__all__" else "__all__"] * n
            columns["segment_value"] += [value] * n
            columns["quantity"] += ["metric.m"] * n
            columns["count"] += [float(calls)] * n
            columns["sampled"] += [calls] * n
            columns["numeric_count"] += [float(calls)] * n
            columns["sum"] += total[seed].tolist()
            columns["sum_sq"] += square[seed].tolist()
    insert_aggregates(client, columns)


def _seasonal_buckets(spec: DetectorSpec) -> list[dt.datetime]:
    """The buckets metric_shift_seasonal reads at AT: the windows within ``span`` of
    AT's window ``season`` seconds earlier, then AT's window."""
    window = spec.windows(AT)
    shift = dt.timedelta(seconds=spec.parameters["season"] - spec.parameters["span"])
    start = window["window_start"] - dt.timedelta(
        seconds=spec.parameters["season"] + spec.parameters["span"]
    )
    history = int((window["window_end"] - shift - start).total_seconds()) // 300
    current = [window["window_start"] + dt.timedelta(seconds=300 * i) for i in range(3)]
    return [start + dt.timedelta(seconds=300 * i) for i in range(history)] + current


def test_robust_z_p_values_are_uniform_and_bh_holds_its_rate(client) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(18)
    trailing = spec_named("metric_shift", **OFF)
    seasonal = spec_named("metric_shift_seasonal", **OFF)
    _series(client, bucket_starts(trailing), "trailing", rng)
    _series(client, _seasonal_buckets(seasonal), "seasonal", rng)
    for spec, windows in ((trailing, 24), (seasonal, 9)):
        roll_up_for(client, spec)
        rows = rows_tested(client, spec, f"p_value, {UNCALIBRATED_P}, length(means), segment_dim")
        segments = [row for row in rows if row[3] != "__all__"]  # independent tests
        assert len(segments) == SEEDS * SEGMENTS and {row[2] for row in segments} == {windows}
        calibrated = np.array([row[0] for row in segments])
        before = np.array([row[1] for row in segments])
        assert_uniform(calibrated, spec.name)
        # Before: p < 0.001 far more often than 1 in 1,000 (a binomial count this high
        # has chance < 0.001); after: as often as it should.
        assert stats.binom.sf(np.sum(before < 1e-3) - 1, len(before), 1e-3) < 1e-3, spec.name
        assert stats.binom.sf(np.sum(calibrated < 1e-3) - 1, len(before), 1e-3) >= 1e-3, spec.name
        fdr = spec.parameters["fdr"]
        found = seeds_with_findings(client, per_seed(spec))
        assert_false_finding_share(len(found), SEEDS, fdr, spec.name)


def test_where_a_floor_binds_the_p_value_is_conservative(client) -> None:  # type: ignore[no-untyped-def]
    """No window-to-window wobble: the window means vary by their sampling noise
    only, the scale's floor at the window's standard error binds in about half
    the tests (and the 1 % floor, here larger still, is off), so p comes out
    larger than uniform, never smaller."""
    rng = np.random.default_rng(1819)
    spec = spec_named("metric_shift", **OFF, min_relative_scale=0.0)
    _series(client, bucket_starts(spec), "quiet", rng, wobble=0.0)
    roll_up_for(client, spec)
    rows = rows_tested(client, spec, "p_value, segment_dim, scale = standard_error")
    segments = [row for row in rows if row[1] != "__all__"]
    assert 0.3 < np.mean([row[2] for row in segments]) < 0.7  # the floor binds
    assert_at_most_nominal(np.array([row[0] for row in segments]), "metric_shift, floored")
    found = seeds_with_findings(client, per_seed(spec))
    assert_false_finding_share(len(found), SEEDS, spec.parameters["fdr"], "metric_shift, floored")


def test_a_shift_spread_across_a_dimension_is_no_one_segment_s(client) -> None:  # type: ignore[no-untyped-def]
    """Every segment of a dimension moves alike (the issue's case: a fault elsewhere
    lifts the score in every decile of an unrelated feature), with a window-to-window
    wobble the segments share. Each segment's z sits around the threshold, and a
    segment whose MAD came out small passes it while the unflagged rest (the
    segments the spread moved least) seems to hold: the old rest check reported
    such a segment in 7-14 % of these seeds. Its gap to the rest of the model holds,
    so it is not reported; the whole model is, where anything is."""
    rng = np.random.default_rng(1818)
    spec = spec_named("metric_shift")
    seeds = 300
    for shift, prefix in ((0.15, "mild"), (0.2, "strong")):
        _series(client, bucket_starts(spec), prefix, rng, seeds=seeds, segments=10,
                wobble=0.03, common=0.04, shift=shift)  # fmt: skip
    roll_up_for(client, spec)
    rows = client.query(per_seed(spec).sql, parameters=run_parameters(spec)).result_rows
    localized = {row[1] for row in rows if row[4] != "__all__"}
    whole = {row[1] for row in rows if row[4] == "__all__"}
    # The gap is a statistical check too: it holds in all but about 1 % of seeds.
    assert len(localized) <= 0.02 * 2 * seeds, sorted(localized)
    assert len(whole) >= seeds, "the whole model's shift is reported in most seeds"
