"""Calibration of the detectors' statistics: what a clean run looks like, many times.

The shared harness of the ``test_calibration_*`` tests, and the simulation
behind metric_shift's calibrated robust z. Each family's test writes hundreds
of clean runs ("seeds") straight into the tables its detector reads, one model
per seed so that one query of the real detector SQL, through the real engine,
runs them all. Two claims are checked:

* under no change the p-values are uniform: every test's p-value (read from the
  detector's ``tested`` step, run with threshold 0 so that every p-value is
  computed, see fdr.sql) against U(0, 1) with scipy's KS test, rejected only at
  p < 0.001 (a sound test fails by chance once in a thousand runs; the seeds are
  fixed, so a run that passes always passes);
* Benjamini-Hochberg at the configured rate keeps the share of seeds with any
  false finding at or below that rate (under no change every finding is false,
  so the false discovery rate is the share of seeds with one). The detector's
  false-discovery step is the real one, partitioned by model so that each seed
  is a run of its own; the share may exceed the rate by what a binomial count
  of that many seeds does one time in a thousand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from segwatch.clickhouse import rollups
from segwatch.clickhouse.detection import DetectorSpec, load_manifest

AT = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
"""When every calibration run happens (a cadence boundary of every detector)."""

ACCEPT = 0.001
"""The level below which a calibration check fails."""

AGGREGATE_COLUMNS = (
    "model_name", "model_version", "model_stage", "bucket_start", "segment_dim",
    "segment_value", "quantity", "count", "sampled", "missing", "numeric_count", "sum",
    "sum_sq", "min", "max", "histogram", "categories", "exemplar_trace_ids",
)  # fmt: skip


def spec_named(name: str, **parameters: Any) -> DetectorSpec:
    """The manifest's detector ``name`` with some parameters replaced."""
    spec = next(s for s in load_manifest() if s.name == name)
    return dataclasses.replace(spec, parameters={**spec.parameters, **parameters})


def per_seed(spec: DetectorSpec, seed_column: str = "model_name") -> DetectorSpec:
    """``spec`` with its false-discovery step run per seed (each value of ``seed_column``)."""
    partition = "PARTITION BY fdr_family"
    assert spec.sql.count(partition) == 3, "fdr.sql changed: update the calibration harness"
    return dataclasses.replace(spec, sql=spec.sql.replace(partition, f"{partition}, {seed_column}"))


def run_parameters(spec: DetectorSpec, at: dt.datetime = AT) -> dict[str, Any]:
    """The query parameters the runner gives ``spec`` for a run at ``at``."""
    windows = spec.windows(at)
    return {
        **spec.parameters,
        "detector": spec.name,
        **{k: v.strftime("%Y-%m-%d %H:%M:%S") for k, v in windows.items()},
    }


def roll_up_for(client, spec: DetectorSpec, at: dt.datetime = AT) -> None:  # type: ignore[no-untyped-def]
    """Roll up what a run of ``spec`` at ``at`` reads, as the runner does first."""
    rollups.roll_up_for(client, spec.sql, spec.maps, spec.windows(at))


def rows_tested(client, spec: DetectorSpec, columns: str, at: dt.datetime = AT) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
    """``columns`` of every row of the detector's ``tested`` step (its query up to
    the final SELECT, which is replaced by one over ``tested``)."""
    cut = spec.sql.rfind("\nSELECT\n")
    assert cut > 0
    sql = spec.sql[:cut] + f"\nSELECT {columns} FROM tested"
    return list(client.query(sql, parameters=run_parameters(spec, at)).result_rows)


def seeds_with_findings(  # type: ignore[no-untyped-def]
    client, spec: DetectorSpec, at: dt.datetime = AT, seed_column: int = 1
) -> set[str]:
    """The seeds (models, or the output column ``seed_column``) for which the
    detector's query reports anything."""
    rows = client.query(spec.sql, parameters=run_parameters(spec, at)).result_rows
    return {row[seed_column] for row in rows}


def assert_uniform(p_values: Sequence[float], what: str) -> float:
    """Fail when the p-values are not U(0, 1) (KS, at ``ACCEPT``); return the KS p."""
    values = np.asarray(p_values, dtype=float)
    assert len(values) >= 500, f"{what}: only {len(values)} p-values"
    result = stats.kstest(values, "uniform")
    assert result.pvalue >= ACCEPT, (
        f"{what}: p-values not uniform (KS D {result.statistic:.4f}, p {result.pvalue:.2g}, "
        f"{len(values)} values, share below 0.01: {np.mean(values < 0.01):.4f})"
    )
    return float(result.pvalue)


def assert_at_most_nominal(p_values: np.ndarray, what: str) -> None:
    """P(p <= a) <= a at a few levels a, up to binomial noise (chance < ACCEPT)."""
    for level in (0.001, 0.01, 0.05, 0.2):
        below = int(np.sum(p_values <= level))
        chance = stats.binom.sf(below - 1, len(p_values), level)
        assert chance >= ACCEPT, f"{what}: {below} of {len(p_values)} p-values <= {level}"


def assert_false_finding_share(found: int, seeds: int, rate: float, what: str) -> None:
    """Fail when ``found`` of ``seeds`` clean seeds with a finding is more than a
    share ``rate`` allows (a binomial count this high, or higher, has chance < ACCEPT)."""
    chance = float(stats.binom.sf(found - 1, seeds, rate))
    assert chance >= ACCEPT, (
        f"{what}: {found} of {seeds} clean seeds had a finding ({found / seeds:.3f}, rate {rate}; "
        f"binomial P(>= {found}) = {chance:.2g})"
    )


def insert_aggregates(client, columns: Mapping[str, Sequence[Any]]) -> None:  # type: ignore[no-untyped-def]
    """Insert minute rows into ml_segment_aggregates, column by column (missing
    columns get their neutral value)."""
    rows = len(next(iter(columns.values())))
    neutral: dict[str, Any] = {
        "model_version": "1", "model_stage": "serving", "count": None, "sampled": None,
        "missing": 0.0, "numeric_count": 0.0, "sum": 0.0, "sum_sq": 0.0,
        "min": float("inf"), "max": float("-inf"), "histogram": {}, "categories": {},
        "exemplar_trace_ids": [],
    }  # fmt: skip
    data = []
    for name in AGGREGATE_COLUMNS:
        if name in columns:
            data.append(list(columns[name]))
        else:
            assert neutral.get(name) is not None, f"column {name} is needed"
            data.append([neutral[name]] * rows)
    client.insert(
        "ml_segment_aggregates", data, column_names=list(AGGREGATE_COLUMNS), column_oriented=True
    )


def bucket_starts(spec: DetectorSpec, at: dt.datetime = AT) -> list[dt.datetime]:
    """The 5-minute buckets a run of ``spec`` at ``at`` reads: baseline, then window."""
    windows = spec.windows(at)
    start, end = windows["baseline_start"], windows["window_end"]
    count = int((end - start).total_seconds()) // 300
    return [start + dt.timedelta(seconds=300 * i) for i in range(count)]


def compact_buckets(spec: DetectorSpec, calls: int = 100) -> tuple[list[dt.datetime], list[int]]:
    """The buckets of a run of ``spec`` at AT with ``calls`` calls each, the
    baseline's in its first bucket (the detectors read their sum: cheaper to write)."""
    buckets = bucket_starts(spec)
    return [buckets[0], *buckets[-3:]], [calls * (len(buckets) - 3), calls, calls, calls]


# The calibration of the robust z (statistics.sql: sw_robust_scale, sw_robust_dof).


def robust_z_null(windows: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """|z| of a window mean against ``windows`` earlier ones, all N(0, 1): the
    median/MAD robust z as metric_shift computed it before calibration."""
    earlier = rng.standard_normal((draws, windows))
    current = rng.standard_normal(draws)
    median = np.median(earlier, axis=1)
    mad = 1.4826 * np.median(np.abs(earlier - median[:, None]), axis=1)
    return np.abs(current - median) / mad


def calibrated_p(z: np.ndarray, windows: int) -> np.ndarray:
    """The calibrated two-sided p of robust z's over ``windows`` windows (as the SQL)."""
    return np.asarray(2 * stats.t.sf(z * (windows - 1.1) / windows, 0.4 * windows))


def test_the_robust_z_calibration_is_the_simulation_s() -> None:
    """The simulation that gave sw_robust_scale and sw_robust_dof: the uncalibrated
    z with Student's t (windows - 1) gives p < 0.001 several times too often; scaled
    by (n - 1.1) / n with 0.4 n degrees of freedom its tail is within a factor 1.6."""
    rng = np.random.default_rng(20261206)
    draws = 200_000
    for windows in (8, 12, 24, 48):
        z = robust_z_null(windows, draws, rng)
        before = float(np.mean(2 * stats.t.sf(z, windows - 1) < 1e-3)) / 1e-3
        after = float(np.mean(calibrated_p(z, windows) < 1e-3)) / 1e-3
        at_5 = float(np.mean(calibrated_p(z, windows) < 0.05)) / 0.05
        assert before > 2.5, (windows, before)
        assert 0.4 < after < 1.6, (windows, after)
        assert 0.85 < at_5 < 1.15, (windows, at_5)


# Clean traffic as minute rows: histograms and categories drawn bucket by bucket.

CATEGORIES = {"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.07, "e": 0.03}
RARE_CATEGORIES, RARE_SHARE = 1000, 0.05
"""With ``rare``, feature.c also takes one of RARE_CATEGORIES rare values in a share
RARE_SHARE of calls, so values a baseline never saw keep coming (as ids do)."""


def value_keys(rng: np.random.Generator, draws: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Histogram keys of a log-normal value spanning a few decades, and their
    probabilities (estimated from ``draws`` values: fine-grained enough that
    few calls share a key, as for real measurements)."""
    from segwatch.collector.aggregate.histogram import histogram_keys

    keys, counts = np.unique(histogram_keys(rng.lognormal(3.0, 1.5, draws)), return_counts=True)
    return keys.astype(int), counts / counts.sum()


def clean_traffic(  # type: ignore[no-untyped-def]
    client, buckets: Sequence[dt.datetime], prefix: str, rng: np.random.Generator, *,
    seeds: int, segments: int = 4, calls: int | Sequence[int] = 100, missing: float = 0.03,
    version: str = "1", stage: str = "serving", rare: bool = False,
) -> None:  # fmt: skip
    """``seeds`` models named ``prefix``<i>, one row per bucket, segment (``segments``
    values of feature.g, and the whole model) and quantity: feature.x a number
    (value_keys), feature.c a category (CATEGORIES), each MISSING in a share
    ``missing`` of ``calls`` calls per segment and bucket (or per bucket, one each),
    all of ``version`` in ``stage``. Nothing changes."""
    from segwatch.collector.aggregate.histogram import bucket_value

    keys, probabilities = value_keys(rng)
    values = np.array([bucket_value(int(k)) for k in keys])
    tail = RARE_CATEGORIES if rare else 0
    names = [*CATEGORIES, *(f"r{i}" for i in range(tail))]
    shares = np.array([*CATEGORIES.values(), *[RARE_SHARE / RARE_CATEGORIES] * tail])
    shares /= shares.sum()
    shape = (seeds, segments, len(buckets))
    per_bucket = np.broadcast_to(np.asarray(calls), (len(buckets),))
    cell_calls = np.broadcast_to(per_bucket, shape).ravel()
    absent = rng.binomial(cell_calls, missing, (2, cell_calls.size))
    numbers = rng.multinomial(cell_calls - absent[0], probabilities)
    categories = rng.multinomial(cell_calls - absent[1], shares)
    numbers, categories = numbers.reshape(*shape, -1), categories.reshape(*shape, -1)
    absent = absent.reshape(2, *shape)
    columns: dict[str, list[Any]] = {c: [] for c in AGGREGATE_COLUMNS if c != "exemplar_trace_ids"}
    for seed in range(seeds):
        for segment in [*range(segments), None]:
            pick = slice(None) if segment is None else slice(segment, segment + 1)
            nums, cats = numbers[seed, pick].sum(axis=0), categories[seed, pick].sum(axis=0)
            gone = absent[:, seed, pick].sum(axis=1)
            total = per_bucket * (segments if segment is None else 1)
            for b, bucket in enumerate(buckets):
                used = np.nonzero(nums[b])[0]
                key_counts = nums[b][used].astype(float)
                row_values = values[used]
                common = {
                    "model_name": f"{prefix}{seed}", "model_version": version,
                    "model_stage": stage, "bucket_start": bucket,
                    "segment_dim": "__all__" if segment is None else "feature.g",
                    "segment_value": "__all__" if segment is None else f"s{segment}",
                    "count": float(total[b]), "sampled": int(total[b]),
                }  # fmt: skip
                number = {
                    "quantity": "feature.x", "missing": float(gone[0, b]),
                    "numeric_count": float(key_counts.sum()),
                    "sum": float(key_counts @ row_values),
                    "sum_sq": float(key_counts @ row_values**2),
                    "min": float(row_values.min()), "max": float(row_values.max()),
                    "histogram": dict(zip(keys[used].tolist(), key_counts.tolist(), strict=True)),
                    "categories": {},
                }  # fmt: skip
                category = {
                    "quantity": "feature.c", "missing": float(gone[1, b]), "numeric_count": 0.0,
                    "sum": 0.0, "sum_sq": 0.0, "min": float("inf"), "max": float("-inf"),
                    "histogram": {},
                    "categories": {names[i]: float(cats[b][i]) for i in np.nonzero(cats[b])[0]},
                }  # fmt: skip
                for row in (number, category):
                    for name, value in {**common, **row}.items():
                        columns[name].append(value)
    insert_aggregates(client, columns)
