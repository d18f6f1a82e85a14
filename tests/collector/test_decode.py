"""Decoding OTLP requests into model-call columns."""

from __future__ import annotations

from segwatch.collector.decode.reference_reader import decode_request
from segwatch.instrumentation import monitor


def test_non_model_spans_are_skipped_and_values_are_typed(recorder) -> None:
    tracer = recorder.provider.get_tracer("t")
    with tracer.start_as_current_span("GET /health"):
        pass
    with monitor(model="m", version="2", tracer_provider=recorder.provider) as call:
        call.features(n=3, x=1.5, flag=True, country="BR")
    batch = decode_request(recorder.request())
    assert len(batch) == 1
    assert batch.models == [("m", "2", "serving")]
    assert batch.quantities["feature.n"].numbers == [3.0]
    assert batch.quantities["feature.flag"].labels == ["true"]
    assert batch.quantities["feature.country"].labels == ["BR"]
    assert batch.rejected_spans == 0


def test_spans_with_ml_values_but_no_valid_model_name_are_rejected(recorder) -> None:
    tracer = recorder.provider.get_tracer("t")
    with tracer.start_as_current_span("predict ?") as span:
        span.set_attribute("ml.feature.a", 1.0)
    with tracer.start_as_current_span("predict ''") as span:
        span.set_attribute("ml.model.name", "")
    with tracer.start_as_current_span("predict 5") as span:
        span.set_attribute("ml.model.name", 5)
        span.set_attribute("ml.feature.a", 2.0)
    with monitor(model="ok", tracer_provider=recorder.provider) as call:
        call.features(a=3.0)
    batch = decode_request(recorder.request())
    assert batch.rejected_spans == 3
    assert "ml.model.name must be a non-empty string" in batch.rejection_reasons[0]
    # The rejected spans' values were taken back: only the valid call remains.
    assert batch.quantities["feature.a"].numbers == [3.0]
    assert batch.quantities["feature.a"].number_rows == [0]


def test_arrays_without_a_batch_size_are_rejected(recorder) -> None:
    tracer = recorder.provider.get_tracer("t")
    with tracer.start_as_current_span("predict m") as span:
        span.set_attribute("ml.model.name", "m")
        span.set_attribute("ml.feature.vector", [1.0, 2.0])
    batch = decode_request(recorder.request())
    assert len(batch) == 0
    assert batch.rejected_spans == 1
    assert "ml.batch.size" in batch.rejection_reasons[0]


def test_attributes_without_a_name_after_the_prefix_are_skipped(recorder) -> None:
    tracer = recorder.provider.get_tracer("t")
    with tracer.start_as_current_span("predict m") as span:
        span.set_attribute("ml.model.name", "m")
        span.set_attribute("ml.feature.", 1.0)
        span.set_attribute("ml.featurex", 1.0)
        span.set_attribute("ml.feature.ok", 2.0)
    batch = decode_request(recorder.request())
    assert set(batch.quantities) == {"feature.ok"}
