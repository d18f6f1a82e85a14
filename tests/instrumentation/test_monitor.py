"""monitor as decorator and context manager, on the real OTel SDK."""

from __future__ import annotations

import asyncio
import logging
import math

import numpy as np
import pandas as pd
import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from segwatch.instrumentation import attributes as attr
from segwatch.instrumentation import monitor


def test_decorator_records_dict_features_and_number_output(recorder) -> None:
    @monitor(model="fraud", version="3", tracer_provider=recorder.provider)
    def predict(features: dict) -> float:
        return features["amount"] * 2

    assert predict({"amount": 21.0, "country": "BR", "age": None}) == 42.0
    (span,) = recorder.spans()
    assert span.name == "predict fraud"
    a = span.attributes
    assert a[attr.ML_MODEL_NAME] == "fraud"
    assert a[attr.ML_MODEL_VERSION] == "3"
    assert a[attr.ML_MODEL_STAGE] == "serving"
    assert a["ml.feature.amount"] == 21.0
    assert a["ml.feature.country"] == "BR"
    assert "ml.feature.age" not in a  # None is MISSING: the attribute is absent
    assert a["ml.output.prediction"] == 42.0


def test_async_function_and_dict_output(recorder) -> None:
    @monitor(model="sentiment", tracer_provider=recorder.provider)
    async def classify(row: dict) -> dict:
        await asyncio.sleep(0)
        return {"label": "positive", "confidence": np.float32(0.75)}

    assert asyncio.run(classify({"language": "es"}))["label"] == "positive"
    (span,) = recorder.spans()
    assert span.attributes["ml.feature.language"] == "es"
    assert span.attributes["ml.output.label"] == "positive"
    assert span.attributes["ml.output.confidence"] == pytest.approx(0.75)


def test_method_pandas_row_dataframe_and_array_inputs(recorder) -> None:
    class Model:
        @monitor(model="m", feature_names=["a", "b"], tracer_provider=recorder.provider)
        def predict(self, x: object) -> np.ndarray:
            return np.array([1.5])

    model = Model()
    model.predict(pd.Series({"a": 1, "b": "x"}))
    model.predict(pd.DataFrame([{"a": 2, "b": "y"}]))
    model.predict(np.array([3.0, 4.0]))
    spans = recorder.spans()
    assert [s.attributes["ml.feature.a"] for s in spans] == [1, 2, 3.0]
    assert [s.attributes["ml.feature.b"] for s in spans] == ["x", "y", 4.0]
    assert all(s.attributes["ml.output.prediction"] == 1.5 for s in spans)


def test_context_manager_records_everything(recorder) -> None:
    m = monitor(model="fraud", stage="canary", tracer_provider=recorder.provider)
    with m as call:
        call.features(amount=10, country="US")
        call.outputs(score=0.3)
        call.metric("confidence", 0.9)
        call.prediction_id("p-1")
    (span,) = recorder.spans()
    assert span.attributes["ml.model.stage"] == "canary"
    assert span.attributes["ml.metric.confidence"] == 0.9
    assert span.attributes[attr.ML_PREDICTION_ID] == "p-1"
    assert span.attributes["ml.feature.amount"] == 10


def test_call_with_explicit_times(recorder) -> None:
    m = monitor(model="fraud", tracer_provider=recorder.provider)
    with m.call(start_time=1_000_000_000, end_time=1_002_000_000) as call:
        call.features(x=1)
    (span,) = recorder.spans()
    assert (span.start_time, span.end_time) == (1_000_000_000, 1_002_000_000)


def test_model_exception_propagates_and_is_recorded(recorder) -> None:
    @monitor(model="broken", tracer_provider=recorder.provider)
    def predict(x: dict) -> float:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        predict({"a": 1})
    (span,) = recorder.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in span.events)


def test_bad_values_never_raise_into_the_model_call(recorder, caplog) -> None:
    m = monitor(model="m", tracer_provider=recorder.provider)

    @m
    def predict(x: object) -> object:
        return object()  # an output that cannot be recorded

    with caplog.at_level(logging.WARNING):
        result = predict([1, 2, 3])  # positional features without feature_names
        predict([1, 2, 3])
        with m as call:
            call.features(bad=object(), nan=math.nan)
    assert result is not None
    assert len(recorder.spans()) == 3
    messages = [r.getMessage() for r in caplog.records]
    # Each kind of problem is logged once, however often it happens.
    assert sum("cannot record features" in msg for msg in messages) == 1
    assert sum("cannot record outputs" in msg for msg in messages) == 1


def test_without_sdk_it_is_a_no_op() -> None:
    provider = trace.NoOpTracerProvider()

    @monitor(model="m", tracer_provider=provider)
    def predict(x: dict) -> int:
        return 7

    class Watched(dict):  # counts how often the instrumentation reads the input
        reads = 0

        def items(self):  # type: ignore[no-untyped-def]
            Watched.reads += 1
            return super().items()

    assert predict(Watched(a=1)) == 7
    assert Watched.reads == 0  # no SDK: nothing is extracted
    with monitor(model="m", tracer_provider=provider) as call:
        call.features(a=1)
        assert not call.span.is_recording()


def test_nested_and_concurrent_context_managers(recorder) -> None:
    m = monitor(model="m", tracer_provider=recorder.provider)
    with m as outer:
        outer.features(level=1)
        with m as inner:
            inner.features(level=2)
    levels = sorted(s.attributes["ml.feature.level"] for s in recorder.spans())
    assert levels == [1, 2]
    inner_span = next(s for s in recorder.spans() if s.attributes["ml.feature.level"] == 2)
    outer_span = next(s for s in recorder.spans() if s.attributes["ml.feature.level"] == 1)
    assert inner_span.parent.span_id == outer_span.context.span_id


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="model"):
        monitor(model="")
