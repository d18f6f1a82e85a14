"""Monitoring context through OTel baggage, within a process and across services."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.instrumentation import context, monitor, set_context


def test_context_fields_are_recorded_on_every_call_inside(recorder) -> None:
    sentiment = monitor(model="sentiment", tracer_provider=recorder.provider)
    with context(language="es", channel="app"):
        with sentiment as call:
            call.metric("confidence", 0.4)
        with context(channel=None, tier=2), sentiment as call:
            call.metric("confidence", 0.5)
    with sentiment as call:
        call.metric("confidence", 0.6)
    first, second, outside = recorder.spans()
    assert first.attributes["ml.context.language"] == "es"
    assert first.attributes["ml.context.channel"] == "app"
    assert "ml.context.channel" not in second.attributes  # removed by the inner context
    assert second.attributes["ml.context.tier"] == "2"
    assert not any(k.startswith("ml.context.") for k in outside.attributes)


def test_set_context_lasts_until_the_enclosing_context_ends(recorder) -> None:
    model = monitor(model="m", tracer_provider=recorder.provider)
    with context():
        set_context("language", "pt")
        with model:
            pass
    with model:
        pass
    inside, after = recorder.spans()
    assert inside.attributes["ml.context.language"] == "pt"
    assert "ml.context.language" not in after.attributes


def test_context_crosses_services_with_the_w3c_baggage_propagator(recorder) -> None:
    carrier: dict[str, str] = {}
    with context(language="es"):
        W3CBaggagePropagator().inject(carrier)  # what an instrumented HTTP client sends
    assert "ml.context.language=es" in carrier["baggage"]
    token = otel_context.attach(W3CBaggagePropagator().extract(carrier))  # the other service
    try:
        with monitor(model="sentiment", tracer_provider=recorder.provider) as call:
            call.metric("confidence", 0.3)
    finally:
        otel_context.detach(token)
    (span,) = recorder.spans()
    assert span.attributes["ml.context.language"] == "es"


def test_language_found_upstream_segments_the_sentiment_confidence(recorder) -> None:
    """The text pipeline: the language model's output becomes a segment of sentiment's."""
    language_model = monitor(model="language", tracer_provider=recorder.provider)
    sentiment_model = monitor(model="sentiment", tracer_provider=recorder.provider)

    @language_model
    def detect_language(text: dict) -> str:
        return "es" if text["text"].startswith("hola") else "en"

    @sentiment_model
    def classify(text: dict) -> dict:
        confident = not text["text"].startswith("hola")
        return {"label": "positive", "confidence": 0.9 if confident else 0.5}

    for text in ["hola amigo", "hello friend", "hola mundo", "hi there"]:
        with context(language=detect_language({"text": text})):
            classify({"text": text})
    rows = SegmentAggregator().aggregate(decode_request(recorder.request()))
    c = rows.columns
    found = {
        c["segment_value"][i]: c["sum"][i] / c["numeric_count"][i]
        for i in range(len(rows))
        if c["model_name"][i] == "sentiment"
        and c["segment_dim"][i] == "context.language"
        and c["quantity"][i] == "output.confidence"
    }
    assert found == {"es": 0.5, "en": 0.9}
