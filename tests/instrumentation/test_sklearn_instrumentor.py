"""SklearnInstrumentor on real scikit-learn and LightGBM models, in process and under
opentelemetry-instrument in a real subprocess."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from waiting import wait_until

from segwatch.instrumentation.sklearn_instrumentor import SklearnInstrumentor, model_version

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def instrumented(recorder):  # type: ignore[no-untyped-def]
    instrumentor = SklearnInstrumentor()
    instrumentor.instrument(tracer_provider=recorder.provider)
    yield recorder
    instrumentor.uninstrument()


def _data(n: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    return x, (x["a"] + x["b"] > 0).to_numpy()


def _model_spans(recorder) -> list:  # type: ignore[no-untyped-def]
    return [s for s in recorder.spans() if "ml.model.name" in s.attributes]


def test_classifier_predict_proba_is_one_batch_span(instrumented) -> None:
    x, y = _data()
    model = LogisticRegression().fit(x, y)
    model.predict_proba(x.iloc[:10])
    (span,) = _model_spans(instrumented)
    a = span.attributes
    assert span.name == "predict_proba LogisticRegression"
    assert a["ml.model.version"] == model_version(model)
    assert a["ml.batch.size"] == 10
    assert a["ml.feature.a"] == tuple(x["a"].iloc[:10])
    assert set(a["ml.output.label"]) <= {True, False}
    assert all(0.5 <= c <= 1 for c in a["ml.metric.confidence"])


def test_pipeline_is_one_model_call_named_by_its_attribute(instrumented) -> None:
    x, y = _data()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    pipeline.segwatch_model_name = "churn"
    pipeline.segwatch_model_version = "7"
    pipeline.predict(x.iloc[:5])
    (span,) = _model_spans(instrumented)  # not one per step
    assert span.attributes["ml.model.name"] == "churn"
    assert span.attributes["ml.model.version"] == "7"
    assert len(span.attributes["ml.output.prediction"]) == 5


def test_version_follows_the_fitted_parameters() -> None:
    x, y = _data()
    first = LinearRegression().fit(x, y)
    same = LinearRegression().fit(x, y)
    retrained = LinearRegression().fit(x.iloc[:100], y[:100])
    assert model_version(first) == model_version(same)
    assert model_version(first) != model_version(retrained)


def test_lightgbm_through_its_sklearn_api(instrumented) -> None:
    x, y = _data()
    model = LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y)
    model.predict(x.iloc[:3])
    spans = _model_spans(instrumented)
    assert [s.attributes["ml.model.name"] for s in spans] == ["LGBMClassifier"]
    assert spans[0].attributes["ml.batch.size"] == 3


def test_uninstrument_undoes_every_patch_and_twice_only_warns(recorder, caplog) -> None:
    instrumentor = SklearnInstrumentor()
    instrumentor.instrument(tracer_provider=recorder.provider)
    with caplog.at_level(logging.WARNING):
        instrumentor.instrument(tracer_provider=recorder.provider)
    assert "already instrumented" in caplog.text
    instrumentor.uninstrument()
    x, y = _data()
    LogisticRegression().fit(x, y).predict(x)
    assert _model_spans(recorder) == []


def test_opentelemetry_instrument_monitors_an_unmodified_service(collector) -> None:
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "churn-service",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector.receiver.address}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "opentelemetry-instrument"), sys.executable,
         str(ROOT / "examples" / "sklearn_service.py")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stats = collector.processor.stats
    wait_until(lambda: stats.model_calls >= 200)
    collector.flush()
    rows = collector._clients.api.query(
        "SELECT model_name, service_name, count() FROM ml_model_calls GROUP BY ALL"
    ).result_rows
    assert rows == [("churn", "churn-service", 200)]
    features = collector._clients.api.query(
        "SELECT DISTINCT segment_dim FROM ml_segment_aggregates ORDER BY segment_dim"
    ).result_rows
    assert [r[0] for r in features] == [
        "__all__", "feature.monthly_spend", "feature.support_calls", "feature.tenure_months",
    ]  # fmt: skip
