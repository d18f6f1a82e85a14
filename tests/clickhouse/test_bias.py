"""The bias detector: a segment's gap from the rest of its dimension that grows is found;
the gaps a model always had (its score depends on its inputs) are not, unless the field is
declared sensitive; a declared expected bias is never reported. Numbers checked with
numpy and scipy."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
from scipy import stats
from shop_traffic import store_recorded
from test_calibration import per_seed, seeds_with_findings

from segwatch.clickhouse.detection import DetectorSpec, run_detector
from segwatch.collector.config import configured_detectors, parse_config
from segwatch.instrumentation import monitor

END = 1_800_000_000 - 1_800_000_000 % 3600  # on the hour: a run of bias (15-minute cadence)
HOURS = 7  # the 1-hour window and the 6 hours of baseline before it
LANGUAGES = ["en", "es", "de", "fr", "ja"]
LANGUAGE_SHARES = [0.3, 0.25, 0.2, 0.15, 0.1]
# Confidence by language: the model is less sure of some languages, and always was.
STANDING = {"en": 0.9, "es": 0.86, "de": 0.82, "fr": 0.87, "ja": 0.76}
SD = 0.05

CONFIG = """\
models:
  sentiment:
    features:
      language: {type: category}
      channel: {type: category}
"""
SENSITIVE = CONFIG.replace(
    "language: {type: category}", "language: {type: category, sensitive: true}"
)
JA_EXPECTED = (
    SENSITIVE
    + """\
expected_biases:
  # Japanese texts are scored by a smaller tokenizer: known, accepted.
  - {model: sentiment, dimension: language, quantities: [metric.confidence]}
"""
)


def _traffic(seed: int, shift: dict[str, float] | None = None) -> list[tuple[int, dict]]:
    """(minute, columns): 40 calls a minute for HOURS hours before END; confidence depends
    on the language (and a little on the channel); ``shift`` moves a language's confidence
    in the last hour (the window)."""
    rng = np.random.default_rng(seed)
    minutes = []
    for minute in range(END - HOURS * 3600, END, 60):
        n = 40
        language = np.asarray(LANGUAGES)[rng.choice(len(LANGUAGES), size=n, p=LANGUAGE_SHARES)]
        channel = np.where(rng.random(n) < 0.3, "app", "web")
        confidence = np.array([STANDING[x] for x in language]) + rng.normal(0, SD, n)
        confidence -= np.where(channel == "app", 0.03, 0.0)
        if shift and minute >= END - 3600:
            confidence += np.array([shift.get(x, 0.0) for x in language])
        minutes.append(
            (minute, {"language": language, "channel": channel, "confidence": confidence})
        )
    return minutes


def _store(client, recorder, minutes: list[tuple[int, dict]]) -> None:  # type: ignore[no-untyped-def]
    """One batch span a minute through the real path: SDK, decoder, aggregator, store."""
    model = monitor(model="sentiment", version="1", tracer_provider=recorder.provider)
    for minute, columns in minutes:
        at = (minute + 30) * 1_000_000_000
        with model.call(start_time=at, end_time=at + 1) as call:
            call.batch(
                len(columns["language"]),
                {"language": columns["language"], "channel": columns["channel"]},
                metrics={"confidence": columns["confidence"]},
            )
    store_recorded(client, recorder)


def _spec(config_text: str, **parameters: object) -> DetectorSpec:
    spec = next(s for s in configured_detectors(parse_config(config_text)) if s.name == "bias")
    return dataclasses.replace(spec, parameters={**spec.parameters, **parameters})


def _run(client, spec: DetectorSpec) -> list[dict]:  # type: ignore[no-untyped-def]
    return run_detector(client, spec, dt.datetime.fromtimestamp(END, dt.timezone.utc)).new_anomalies


def _segments(found: list[dict]) -> list[tuple[str, str]]:
    return [(a["segment_dim"], a["segment_value"]) for a in found]


def _gap(minutes: list[tuple[int, dict]], language: str, window: bool) -> tuple[float, float]:
    """(gap, its squared Welch standard error) of ``language`` from the other languages."""
    rows = [c for m, c in minutes if (m >= END - 3600) == window]
    language_of = np.concatenate([c["language"] for c in rows])
    confidence = np.concatenate([c["confidence"] for c in rows])
    inside, rest = confidence[language_of == language], confidence[language_of != language]
    return (
        inside.mean() - rest.mean(),
        inside.var() / len(inside) + rest.var() / len(rest),
    )


def test_standing_gaps_of_an_input_dependent_score_raise_nothing(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """Confidence differs by language by up to 3 deviations (ja), all day: the model
    depending on its input. The old detector reported ja and de; now nothing is news."""
    _store(client, recorder, _traffic(seed=1))
    assert _run(client, _spec(CONFIG)) == []


def test_a_new_gap_is_found_with_its_segment_first(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """es's confidence falls behind in the last hour (-0.04, under a deviation): found, and
    nothing else; its numbers are the gap's change from the calls sent."""
    minutes = _traffic(seed=2, shift={"es": -0.04})
    _store(client, recorder, minutes)
    found = _run(client, _spec(CONFIG))
    assert _segments(found) == [("feature.language", "es")]
    anomaly = found[0]
    gap, error = _gap(minutes, "es", window=True)
    gap_before, error_before = _gap(minutes, "es", window=False)
    z = (gap - gap_before) / np.sqrt(error + error_before)
    assert anomaly["current_value"] == pytest.approx(gap, rel=1e-6)
    assert anomaly["baseline_value"] == pytest.approx(gap_before, rel=1e-6)
    assert anomaly["statistics"]["change_z"] == pytest.approx(z, rel=1e-6)
    assert anomaly["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-6, abs=1e-300)
    # the 6 hours before the window, as the store gives times back (naive UTC)
    assert anomaly["baseline_start"] == dt.datetime(2027, 1, 15, 1, 0)
    assert anomaly["details"].startswith(
        "metric.confidence's gap for feature.language=es from the rest of feature.language grew "
        f"from {gap_before:+.4f} to {gap:+.4f}"
    )
    assert "z test of the change in gap" in anomaly["details"]
    assert "in the 6 h before" in anomaly["details"]


def test_a_sensitive_field_s_standing_gap_is_reported_unless_expected(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """Declared sensitive, language's standing gaps are fairness findings: ja (2 deviations
    below the other languages), en (above) and de; es and fr sit within half a deviation.
    The declaration of an expected bias silences them."""
    minutes = _traffic(seed=3)
    _store(client, recorder, minutes)
    found = _run(client, _spec(SENSITIVE))
    assert _segments(found) == [("feature.language", v) for v in ("ja", "en", "de")]
    ja = found[0]
    gap, error = _gap(minutes, "ja", window=True)
    assert ja["current_value"] - ja["baseline_value"] == pytest.approx(gap, rel=1e-6)
    assert ja["statistics"]["z"] == pytest.approx(gap / np.sqrt(error), rel=1e-6)
    assert ja["details"].startswith(
        "metric.confidence is lower for feature.language=ja than for the rest of feature.language"
    )
    assert "declared sensitive" in ja["details"] and "Welch's z test" in ja["details"]
    assert _run(client, _spec(JA_EXPECTED)) == []


def test_a_sensitive_gap_needs_no_baseline(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """A model whose calls began within the window: no change can be tested, the standing
    gaps of a sensitive field can (and their numbers are all finite)."""
    _store(client, recorder, [(m, c) for m, c in _traffic(seed=5) if m >= END - 3600])
    assert _run(client, _spec(CONFIG)) == []
    found = _run(client, _spec(SENSITIVE))
    assert _segments(found) == [("feature.language", v) for v in ("ja", "en", "de")]
    assert all(a["statistics"]["change"] == 0 for a in found)
    assert all(np.isfinite(list(a["statistics"].values())).all() for a in found)
    assert "change_z" not in found[0]["statistics"]


def test_a_declared_gap_that_grows_is_still_reported(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """Declared expected, ja's standing gap is silent; grown by under a deviation in the
    last hour, it is news, as it would be on any field."""
    _store(client, recorder, _traffic(seed=4, shift={"ja": -0.04}))
    found = _run(client, _spec(JA_EXPECTED))
    assert _segments(found) == [("feature.language", "ja")]
    assert found[0]["statistics"]["change"] == 1
    assert found[0]["details"].endswith("; the gap is declared expected, not its growth")


# -- many clean seeds, generated as aggregates ------------------------------------------
#
# A seed is one model (m000, m001, ...): a dimension of five countries whose score differs
# by up to two deviations (a score that depends on its input), each country's deviation its
# own. Per 5-minute bucket and country the aggregates are drawn as normal calls' sufficient
# statistics would be (the mean from N(mu, sd^2 / n), the squares about it from
# sd^2 chi2(n - 1)), written to the minute table the runner rolls up: the same numbers the
# collector writes, for hundreds of seeds in a second.

SEEDS = 500
COUNTRIES = ["US", "DE", "BR", "IN", "JP"]
COUNTRY_SHARES = np.array([0.35, 0.2, 0.18, 0.15, 0.12])
CALLS_PER_BUCKET = 300  # 3,600 an hour: the smallest country has ~430 in the window


def _clean_seeds(client, seeds: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(18)
    buckets = np.arange(END - HOURS * 3600, END, 300)
    columns: dict[str, list] = {name: [] for name in _AGGREGATE_COLUMNS}
    for seed in range(seeds):
        means = 0.5 + rng.uniform(-0.1, 0.1, len(COUNTRIES))  # standing gaps, ~2 deviations
        deviations = rng.uniform(0.03, 0.08, len(COUNTRIES))
        n = rng.poisson(CALLS_PER_BUCKET * COUNTRY_SHARES, (len(buckets), len(COUNTRIES)))
        mean = rng.normal(means, deviations / np.sqrt(n))
        squares = deviations**2 * rng.chisquare(n - 1) + n * mean**2
        for (b, c), calls in np.ndenumerate(n):
            columns["model_name"].append(f"m{seed:03d}")
            columns["bucket_start"].append(dt.datetime.fromtimestamp(buckets[b], dt.timezone.utc))
            columns["segment_value"].append(COUNTRIES[c])
            columns["count"].append(float(calls))
            columns["sampled"].append(int(calls))
            columns["sum"].append(float(calls * mean[b, c]))
            columns["sum_sq"].append(float(squares[b, c]))
    rows = len(columns["model_name"])
    constant = {
        "model_version": "1", "model_stage": "serving", "segment_dim": "feature.country",
        "quantity": "output.score", "missing": 0.0, "min": 0.0, "max": 1.0,
        "histogram": {}, "categories": {}, "exemplar_trace_ids": [],
    }  # fmt: skip
    for name, value in constant.items():
        columns[name] = [value] * rows
    columns["numeric_count"] = columns["count"]
    client.insert(
        "ml_segment_aggregates",
        [columns[name] for name in _AGGREGATE_COLUMNS],
        column_names=list(_AGGREGATE_COLUMNS),
        column_oriented=True,
    )


_AGGREGATE_COLUMNS = (
    "model_name", "model_version", "model_stage", "bucket_start", "segment_dim",
    "segment_value", "quantity", "count", "sampled", "missing", "numeric_count", "sum",
    "sum_sq", "min", "max", "histogram", "categories", "exemplar_trace_ids",
)  # fmt: skip


def test_clean_seeds_are_silent_and_the_change_test_is_calibrated(client) -> None:  # type: ignore[no-untyped-def]
    """500 clean seeds with standing gaps: the default run finds nothing. With every test
    shown (threshold 0, fdr 1, shrinking gaps too), the change test's 2,500 p-values are
    uniform (KS), and Benjamini-Hochberg at the configured rate, per seed, finds something
    in at most that share of the seeds (up to the binomial's 99.9 % bound: with 500 seeds
    at 5 %, 40): the detector's own false-discovery step, partitioned by seed."""
    _clean_seeds(client, SEEDS)
    default = _spec(CONFIG)
    assert _run(client, default) == []
    every = _run(client, _spec(CONFIG, threshold=0.0, fdr=1.0, growth_only=0))
    assert len(every) == SEEDS * len(COUNTRIES)  # every test shown, each seed's five countries
    assert all(a["statistics"]["change"] == 1 for a in every)
    p_values = np.array([a["p_value"] for a in every])
    assert stats.kstest(p_values, "uniform").pvalue > 0.001
    # The detector's own BH step (fdr.sql), run per seed as each seed would be alone.
    rate = default.parameters["fdr"]
    every_test = per_seed(_spec(CONFIG, threshold=0.0, growth_only=0))
    found = seeds_with_findings(client, every_test, dt.datetime.fromtimestamp(END, dt.timezone.utc))
    assert len(found) <= stats.binom.ppf(0.999, SEEDS, rate), len(found)
