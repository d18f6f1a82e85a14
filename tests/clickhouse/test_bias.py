"""The unexpected-bias detector: a segment that differs from the rest of the model,
checked with numpy and scipy; a declared bias is not reported."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest
from scipy import stats
from shop_traffic import END, store_recorded

from segwatch.clickhouse.detection import DetectorSpec, run_detector
from segwatch.collector.config import configured_detectors, parse_config
from segwatch.instrumentation import monitor

HOUR = 3600

CONFIG = """\
models:
  sentiment:
    features:
      language: {type: category}
      channel: {type: category}
"""
CHANNEL_EXPECTED = (
    CONFIG
    + """\
expected_biases:
  # Phone texts are short: confidence is lower there by design.
  - {model: sentiment, dimension: channel, quantities: [metric.confidence]}
"""
)


def _calls(de_gap: float, app_gap: float, seed: int = 5) -> list[tuple[int, str, str, float]]:
    """(second, language, channel, confidence): one call a second for the hour before END."""
    rng = random.Random(seed)
    calls = []
    for second in range(END - HOUR, END):
        language = rng.choice(["en", "es", "de", "fr"])
        channel = rng.choices(["web", "app"], [0.7, 0.3])[0]
        confidence = rng.gauss(0.85, 0.06)
        confidence -= de_gap if language == "de" else 0.0
        confidence -= app_gap if channel == "app" else 0.0
        calls.append((second, language, channel, confidence))
    return calls


def _store(client, recorder, calls) -> None:  # type: ignore[no-untyped-def]
    model = monitor(model="sentiment", version="1", tracer_provider=recorder.provider)
    for second, language, channel, confidence in calls:
        start = second * 1_000_000_000
        with model.call(start_time=start, end_time=start + 1) as call:
            call.features(language=language, channel=channel)
            call.metric("confidence", confidence)
    store_recorded(client, recorder)


def _spec(config_text: str) -> DetectorSpec:
    return next(s for s in configured_detectors(parse_config(config_text)) if s.name == "bias")


def _run(client, spec: DetectorSpec) -> list[dict]:  # type: ignore[no-untyped-def]
    return run_detector(client, spec, dt.datetime.fromtimestamp(END, dt.timezone.utc)).new_anomalies


def test_an_undeclared_bias_is_found_and_a_declared_one_is_not(client, recorder) -> None:  # type: ignore[no-untyped-def]
    calls = _calls(de_gap=0.08, app_gap=0.08)
    _store(client, recorder, calls)
    found = _run(client, _spec(CHANNEL_EXPECTED))
    assert [(a["segment_dim"], a["segment_value"]) for a in found] == [("feature.language", "de")]
    anomaly = found[0]
    # The same numbers from the calls sent: Cohen's d on the pooled (population)
    # deviation and Welch's z against the rest of the model.
    de = np.array([c[3] for c in calls if c[1] == "de"])
    rest = np.array([c[3] for c in calls if c[1] != "de"])
    d = (de.mean() - rest.mean()) / np.sqrt((de.var() + rest.var()) / 2)
    z = (de.mean() - rest.mean()) / np.sqrt(de.var() / len(de) + rest.var() / len(rest))
    assert anomaly["statistics"]["d"] == pytest.approx(d, rel=1e-6)
    assert anomaly["statistics"]["z"] == pytest.approx(z, rel=1e-6)
    assert anomaly["score"] == pytest.approx(abs(d), rel=1e-6)
    assert anomaly["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-6, abs=1e-300)
    assert anomaly["current_value"] == pytest.approx(de.mean(), rel=1e-9)
    assert anomaly["baseline_value"] == pytest.approx(rest.mean(), rel=1e-9)
    assert anomaly["support"] == len(de)
    sentence = "metric.confidence is lower for feature.language=de than for the rest"
    assert sentence in anomaly["details"]


def test_the_declaration_is_what_silences_a_bias(client, recorder) -> None:  # type: ignore[no-untyped-def]
    _store(client, recorder, _calls(de_gap=0.0, app_gap=0.08))
    assert _run(client, _spec(CHANNEL_EXPECTED)) == []
    # Undeclared, the same bias is reported, on the smaller side of the two channels.
    found = _run(client, _spec(CONFIG))
    assert [(a["segment_dim"], a["segment_value"]) for a in found] == [("feature.channel", "app")]


def test_a_model_without_bias_raises_nothing(client, recorder) -> None:  # type: ignore[no-untyped-def]
    _store(client, recorder, _calls(de_gap=0.0, app_gap=0.0))
    assert _run(client, _spec(CONFIG)) == []
