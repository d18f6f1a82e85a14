"""The instrumentation never breaks or blocks the model call; problems are logged and counted."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from segwatch.instrumentation import monitor


class BrokenExporter(SpanExporter):
    calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        BrokenExporter.calls += 1
        raise ConnectionError("collector unreachable")


class RaisingProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("a buggy span processor")


def test_a_broken_exporter_does_not_reach_the_model_call(caplog) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(BrokenExporter()))

    @monitor(model="m", tracer_provider=provider)
    def predict(row: dict) -> float:
        return 42.0

    with caplog.at_level(logging.ERROR):
        assert [predict({"a": 1}) for _ in range(3)] == [42.0] * 3
    assert BrokenExporter.calls >= 3  # the export really failed, every time


def test_a_raising_span_processor_is_counted_not_raised() -> None:
    provider = TracerProvider()
    provider.add_span_processor(RaisingProcessor())
    model = monitor(model="m", tracer_provider=provider)

    @model
    def predict(row: dict) -> float:
        return 1.0

    assert predict({"a": 1}) == 1.0
    assert model.problems["span"] == 1


def test_nan_is_recorded_as_a_value(recorder) -> None:
    @monitor(model="m", tracer_provider=recorder.provider)
    def predict(row: dict) -> float:
        return math.nan

    predict({"x": math.nan})
    (span,) = recorder.spans()
    assert math.isnan(span.attributes["ml.feature.x"])
    assert math.isnan(span.attributes["ml.output.prediction"])


def test_unserialisable_values_are_skipped_counted_and_logged_once(recorder, caplog) -> None:
    model = monitor(model="m", tracer_provider=recorder.provider)

    @model
    def predict(row: dict) -> float:
        return 3.0

    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert predict({"bad": object(), "good": 1.5}) == 3.0
    assert model.problems["features"] == 5
    assert sum("cannot record features" in r.getMessage() for r in caplog.records) == 1
    spans = recorder.spans()
    assert all(s.attributes["ml.feature.good"] == 1.5 for s in spans)  # the rest is kept
    assert all("ml.feature.bad" not in s.attributes for s in spans)


def test_an_exception_while_reading_the_input_is_counted(recorder) -> None:
    class Exploding(dict):
        def items(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("cannot iterate")

    model = monitor(model="m", tracer_provider=recorder.provider)

    @model
    def predict(row: dict) -> str:
        return "ok"

    assert predict(Exploding(a=1)) == "ok"
    assert model.problems["features"] == 1
    (span,) = recorder.spans()
    assert span.attributes["ml.output.prediction"] == "ok"


def test_no_sdk_means_no_span_and_no_work() -> None:
    model = monitor(model="m")  # the global provider: none configured in this process

    @model
    def predict(row: dict) -> int:
        return 5

    assert predict({"a": object()}) == 5
    assert not model.problems  # nothing was even looked at
