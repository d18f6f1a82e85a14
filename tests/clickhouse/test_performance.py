"""The performance detector: once labels arrive, a segment where the model got worse,
its accuracy and AUC checked with numpy and scipy."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random

import numpy as np
import pytest
from scipy import stats
from shop_traffic import END

from segwatch.clickhouse.detection import DetectorSpec, run_detector
from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config import configured_detectors, parse_config
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.store.call_rows import call_rows
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import monitor

CONFIG = """\
models:
  fraud:
    features: {country: {type: category}}
    outputs: {score: {type: number}, is_fraud: {type: bool}}
    labels:
      is_fraud: {kind: classification, prediction: is_fraud, score: score, positive: true}
  eta:
    features: {city: {type: category}}
    outputs: {minutes: {type: number}}
    labels:
      minutes: {kind: regression, prediction: minutes}
"""
HOUR = 3600
DELAY = HOUR  # the window: the hour that ended an hour before the run
WINDOW_END = END - DELAY
COUNTRIES = ["US", "BR", "DE", "FR"]


def _spec() -> DetectorSpec:
    spec = next(s for s in configured_detectors(parse_config(CONFIG)) if s.name == "performance")
    # A compact history: 6 hours of baseline, a 1-hour window, labels mature after 1 hour.
    return dataclasses.replace(spec, cadence=HOUR, window=HOUR, baseline=6 * HOUR, delay=DELAY)


def _store(client, recorder, broken: str | None) -> list[tuple]:  # type: ignore[no-untyped-def]
    """Fraud calls every 2 s for 7 hours, each labelled; returns (second, country,
    score, truth) per call. The truth follows the score (a calibrated model), except
    in ``broken`` (``*``: everywhere) during the last hour, where it no longer does."""
    rng = random.Random(9)
    model = monitor(model="fraud", version="1", tracer_provider=recorder.provider)
    calls, labels = [], []
    for i, second in enumerate(range(WINDOW_END - 7 * HOUR, WINDOW_END, 2)):
        country = COUNTRIES[i % 4]
        score = 1 / (1 + math.exp(-rng.gauss(-1.0, 1.5)))
        truth = rng.random() < score
        if broken in (country, "*") and second >= WINDOW_END - HOUR:
            truth = rng.random() < 0.3  # the model's scores say nothing here any more
        start = second * 1_000_000_000
        with model.call(start_time=start, end_time=start + 1) as call:
            call.features(country=country)
            call.outputs(score=score, is_fraud=score >= 0.5)
            call.prediction_id(f"tx-{i}")
        labels.append([dt.datetime.fromtimestamp(second + 600, dt.timezone.utc), "fraud", f"tx-{i}",
                       {}, {"label.is_fraud": "true" if truth else "false"}])  # fmt: skip
        calls.append((second, country, score, truth))
    _store_calls_and_labels(client, recorder, labels)
    return calls


def _store_calls_and_labels(client, recorder, labels: list[list]) -> None:  # type: ignore[no-untyped-def]
    """The recorded calls as aggregates and raw calls (a collector flush), and their labels."""
    exporter = ClickHouseExporter(client)
    exporter.start()
    try:
        batch = decode_request(recorder.request())
        exporter.submit(SegmentAggregator().aggregate(batch), call_rows(batch)).result(timeout=60)
    finally:
        exporter.shutdown()
    columns = ["timestamp", "model_name", "prediction_id", "numbers", "strings"]
    client.insert("ml_labels", labels, column_names=columns)


def _run(client, spec: DetectorSpec | None = None) -> list[dict]:  # type: ignore[no-untyped-def]
    at = dt.datetime.fromtimestamp(END, dt.timezone.utc)
    return run_detector(client, spec or _spec(), at).new_anomalies


def test_a_segment_where_the_model_got_worse_is_found(client, recorder) -> None:  # type: ignore[no-untyped-def]
    calls = _store(client, recorder, broken="BR")
    found = {(a["segment_dim"], a["segment_value"], a["quantity"]): a for a in _run(client)}
    assert {(d, v) for d, v, _ in found} == {("feature.country", "BR")}
    assert ("feature.country", "BR", "label.is_fraud.auc") in found
    assert ("feature.country", "BR", "label.is_fraud.accuracy") in found
    # The same numbers from the calls sent.
    br = [c for c in calls if c[1] == "BR"]
    for period, rows in (
        ("current", [c for c in br if c[0] >= WINDOW_END - HOUR]),
        ("baseline", [c for c in br if c[0] < WINDOW_END - HOUR]),
    ):
        scores = np.array([c[2] for c in rows])
        truths = np.array([c[3] for c in rows])
        u = stats.mannwhitneyu(scores[truths], scores[~truths]).statistic
        auc = u / (truths.sum() * (~truths).sum())
        accuracy = np.mean((scores >= 0.5) == truths)
        assert found["feature.country", "BR", "label.is_fraud.auc"]["statistics"][period] == (
            pytest.approx(auc, rel=1e-9)
        )
        assert found["feature.country", "BR", "label.is_fraud.accuracy"]["statistics"][period] == (
            pytest.approx(accuracy, rel=1e-9)
        )
    anomaly = found["feature.country", "BR", "label.is_fraud.auc"]
    assert "auc of label.is_fraud fell for feature.country=BR" in anomaly["details"]
    assert anomaly["exemplar_trace_ids"]  # wrongly classified calls of the window


def test_a_model_that_kept_its_performance_raises_nothing(client, recorder) -> None:  # type: ignore[no-untyped-def]
    _store(client, recorder, broken=None)
    assert _run(client) == []


def test_without_labels_configured_it_does_not_run(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """The manifest's run_if: labels stored, but none configured → the query is not run."""
    _store(client, recorder, broken="BR")
    run_if, labels = _spec().run_if, _spec().parameters["labels"]
    assert client.query(run_if, parameters={"labels": labels}).result_rows[0][0]
    assert not client.query(run_if, parameters={"labels": ""}).result_rows[0][0]
    spec = dataclasses.replace(_spec(), parameters={**_spec().parameters, "labels": ""})
    assert _run(client, spec) == []


def test_a_model_wide_loss_is_the_model_s_not_every_segment_s(client, recorder) -> None:  # type: ignore[no-untyped-def]
    _store(client, recorder, broken="*")
    found = {(a["segment_dim"], a["quantity"]) for a in _run(client)}
    assert ("__all__", "label.is_fraud.auc") in found
    assert {dim for dim, _ in found} == {"__all__"}


def test_a_regressor_whose_errors_grow_in_one_city(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """MAE and RMSE of an ETA model, checked with numpy."""
    rng = random.Random(3)
    model = monitor(model="eta", version="1", tracer_provider=recorder.provider)
    labels, errors = [], []
    for i, second in enumerate(range(WINDOW_END - 7 * HOUR, WINDOW_END, 2)):
        city = ["paris", "lyon", "nice"][i % 3]
        truth = rng.uniform(10, 40)
        noise = 6.0 if city == "lyon" and second >= WINDOW_END - HOUR else 3.0
        predicted = truth + rng.gauss(0, noise)
        start = second * 1_000_000_000
        with model.call(start_time=start, end_time=start + 1) as call:
            call.features(city=city)
            call.outputs(minutes=predicted)
            call.prediction_id(f"trip-{i}")
        labels.append([dt.datetime.fromtimestamp(second + 900, dt.timezone.utc), "eta", f"trip-{i}",
                       {"label.minutes": truth}, {}])  # fmt: skip
        if city == "lyon" and second >= WINDOW_END - HOUR:
            errors.append(predicted - truth)
    _store_calls_and_labels(client, recorder, labels)
    found = {(a["segment_dim"], a["segment_value"], a["quantity"]): a for a in _run(client)}
    assert {(d, v) for d, v, _ in found} == {("feature.city", "lyon")}
    error = np.array(errors)
    mae = found["feature.city", "lyon", "label.minutes.mae"]["statistics"]["current"]
    rmse = found["feature.city", "lyon", "label.minutes.rmse"]["statistics"]["current"]
    assert mae == pytest.approx(np.mean(np.abs(error)), rel=1e-9)
    assert rmse == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-9)


def test_a_classifier_graded_from_its_score_alone(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """No predicted-class output: the class is score >= threshold (0.5 by default)."""
    calls = _store(client, recorder, broken="BR")
    spec = _spec()
    labels = spec.parameters["labels"].replace("output.is_fraud", "")  # no prediction output
    found = {
        (a["segment_value"], a["quantity"]): a
        for a in _run(client, dataclasses.replace(spec, parameters={**spec.parameters,
                                                                     "labels": labels}))
    }  # fmt: skip
    br = [c for c in calls if c[1] == "BR" and c[0] >= WINDOW_END - HOUR]
    accuracy = np.mean([(score >= 0.5) == truth for _, _, score, truth in br])
    current = found["BR", "label.is_fraud.accuracy"]["statistics"]["current"]
    assert current == pytest.approx(accuracy, rel=1e-9)
