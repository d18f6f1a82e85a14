"""The behaviour-metric detector: robust z of a segment's window mean, checked with numpy."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import numpy as np
import pytest
from scipy import stats
from shop_traffic import END, store_recorded

from segwatch.clickhouse.detection import DetectorSpec, load_manifest, run_detector
from segwatch.instrumentation import monitor

LANGUAGES = ["en", "es", "de", "fr"]
WINDOW = 900


def _sentiment_calls(drop: float, seed: int = 2) -> list[tuple[float, str, float]]:
    """(second, language, confidence): 3 sparse hours, then 15 dense minutes before END.

    In the last 15 minutes, confidence for Spanish texts drops by ``drop``.
    """
    rng = random.Random(seed)
    calls = []
    for second in [*range(END - 3 * 3600 - WINDOW, END - WINDOW, 4), *range(END - WINDOW, END)]:
        language = rng.choice(LANGUAGES)
        confidence = rng.gauss(0.9, 0.05)
        if language == "es" and second >= END - WINDOW:
            confidence -= drop
        calls.append((float(second), language, confidence))
    return calls


def _store(client, recorder, calls) -> None:  # type: ignore[no-untyped-def]
    model = monitor(model="sentiment", version="1", tracer_provider=recorder.provider)
    for second, language, confidence in calls:
        start = int(second * 1e9)
        with model.call(start_time=start, end_time=start + 1) as call:
            call.features(language=language)
            call.metric("confidence", confidence)
    store_recorded(client, recorder)


def _spec() -> DetectorSpec:
    spec = next(s for s in load_manifest() if s.name == "metric_shift")
    # No floor at a share of the median: the test checks the MAD path itself.
    return dataclasses.replace(spec, parameters={**spec.parameters, "min_relative_scale": 0.0})


def _robust_z(calls, language: str, spec: DetectorSpec) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """(z, median, current mean) computed with numpy from the calls sent."""
    history_start = END - WINDOW - spec.baseline
    tiles: dict[int, list[float]] = {}
    current = []
    for second, lang, confidence in calls:
        if lang != language:
            continue
        if second >= END - WINDOW:
            current.append(confidence)
        elif second >= history_start:
            tiles.setdefault(int((second - history_start) // WINDOW), []).append(confidence)
    minimum = spec.parameters["min_window_calls"]
    means = np.array([np.mean(v) for v in tiles.values() if len(v) >= minimum])
    median = float(np.median(means))
    # The scale: the MAD's, calibrated for the number of windows (see
    # test_calibration.py), floored at the current mean's standard error.
    standard_error = float(np.std(current)) / np.sqrt(len(current))
    calibration = len(means) / (len(means) - 1.1)
    scale = max(calibration * 1.4826 * float(np.median(np.abs(means - median))), standard_error)
    return (float(np.mean(current)) - median) / scale, median, float(np.mean(current))


def test_a_confidence_drop_for_one_language_is_found_there(client, recorder) -> None:  # type: ignore[no-untyped-def]
    calls = _sentiment_calls(drop=0.15)
    _store(client, recorder, calls)
    spec = _spec()
    run = run_detector(client, spec, dt.datetime.fromtimestamp(END, dt.timezone.utc))
    culprits = [(a["segment_dim"], a["segment_value"], a["quantity"]) for a in run.new_anomalies]
    # The language is the culprit; the whole model (which moved too) is not reported.
    assert culprits == [("feature.language", "es", "metric.confidence")]
    anomaly = run.new_anomalies[0]
    z, median, mean = _robust_z(calls, "es", spec)
    assert anomaly["statistics"]["z"] == pytest.approx(z, rel=1e-9)
    assert anomaly["baseline_value"] == pytest.approx(median, rel=1e-9)
    assert anomaly["current_value"] == pytest.approx(mean, rel=1e-9)
    assert anomaly["statistics"]["baseline_windows"] == 12
    # Student's t with 0.4 n degrees of freedom, n = 12 windows (the calibration)
    assert anomaly["p_value"] == pytest.approx(
        2 * stats.t.sf(abs(z), 0.4 * 12), rel=1e-6, abs=1e-300
    )
    assert abs(anomaly["statistics"]["rest_z"]) <= spec.parameters["rest_threshold"]
    assert "metric.confidence dropped for feature.language=es" in anomaly["details"]


def test_steady_confidence_raises_nothing(client, recorder) -> None:  # type: ignore[no-untyped-def]
    _store(client, recorder, _sentiment_calls(drop=0.0))
    run = run_detector(client, _spec(), dt.datetime.fromtimestamp(END, dt.timezone.utc))
    assert run.new_anomalies == []


def test_a_quiet_history_does_not_turn_sampling_noise_into_a_shift(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """Window means that never moved (MAD 0) and a current window whose mean is off
    by its sampling noise only: the scale is floored at that window's standard error."""
    rng = random.Random(4)
    calls = []
    for i, second in enumerate(range(END - 3 * 3600 - WINDOW, END - WINDOW, 4)):
        # every earlier window: the same values, so the same mean, 0.9
        calls.append((float(second), LANGUAGES[i % 4], 0.85 if (i // 4) % 2 else 0.95))
    for second in range(END - WINDOW, END):
        calls.append((float(second), rng.choice(LANGUAGES), rng.gauss(0.9, 0.05)))
    _store(client, recorder, calls)
    run = run_detector(client, _spec(), dt.datetime.fromtimestamp(END, dt.timezone.utc))
    assert run.new_anomalies == []
