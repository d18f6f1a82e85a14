"""A text pipeline of three models: a language detector, a topic classifier, a sentiment model.

The language found first is a monitoring context of the two later models, and the
topic one of the sentiment model, so "sentiment confidence sagged for Spanish" is one
segment away. It sends exactly the fields the text-pipeline config of docs/config.md
declares (tests/test_examples.py holds the two together). Save that config as
text-pipeline.yaml, then:

    segwatch collector --config text-pipeline.yaml &
    python examples/text_pipeline.py        # to OTEL_EXPORTER_OTLP_ENDPOINT, else :4317
    segwatch sql "SELECT segment_value AS language, sum(sum) / sum(numeric_count) AS confidence
                  FROM ml_segment_aggregates WHERE model_name = 'sentiment'
                  AND segment_dim = 'context.language' AND quantity = 'metric.confidence'
                  GROUP BY language ORDER BY language" --config text-pipeline.yaml
"""

from __future__ import annotations

import os
import random

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from segwatch.instrumentation import context, monitor

endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
provider = TracerProvider(resource=Resource.create({"service.name": "text-pipeline"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
trace.set_tracer_provider(provider)

LANGUAGE = monitor(model="language", version="1")
CATEGORY = monitor(model="category", version="2")
SENTIMENT = monitor(model="sentiment", version="3")
SPANISH = ("hola", "gracias", "mi ")


def detect_language(text: str, channel: str) -> str:
    with LANGUAGE as call:
        call.features(text_length=len(text), channel=channel)
        language = "es" if text.startswith(SPANISH) else "en"
        call.outputs(language=language)
        call.metric("confidence", round(random.uniform(0.85, 1.0), 3))
    return language


def classify_topic(text: str) -> str:
    with CATEGORY as call:  # ml.context.language arrives through the context below
        call.features(text_length=len(text))
        category = "billing" if any(w in text for w in ("factura", "invoice")) else "product"
        call.outputs(category=category)
        call.metric("confidence", round(random.uniform(0.6, 0.95), 3))
    return category


def classify_sentiment(text: str) -> str:
    with SENTIMENT as call:
        call.features(text_length=len(text))
        # Less sure of itself on Spanish: exactly what segwatch should show.
        spanish = text.startswith(SPANISH)
        confidence = random.betavariate(5, 4) if spanish else random.betavariate(9, 2)
        label = random.choice(["positive", "negative"])
        call.outputs(label=label)
        call.metric("confidence", round(confidence, 3))
    return label


TEXTS = [
    "hola, qué tal", "gracias por todo", "mi factura está mal",
    "hello there", "thanks a lot", "great product", "my invoice is wrong",
]  # fmt: skip
for _ in range(500):
    text, channel = random.choice(TEXTS), random.choice(["web", "app", "email"])
    language = detect_language(text, channel)
    with context(language=language):
        category = classify_topic(text)  # sees the language
    with context(language=language, category=category):
        classify_sentiment(text)
provider.shutdown()
print("sent 1,500 model calls (500 each to language, category and sentiment)")
