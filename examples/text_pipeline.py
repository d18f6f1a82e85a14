"""A text pipeline: the language model's output segments the sentiment model's confidence.

segwatch collector &
python examples/text_pipeline.py        # sends to OTEL_EXPORTER_OTLP_ENDPOINT or :4317
segwatch sql "SELECT segment_value, sum(sum) / sum(numeric_count) AS confidence
              FROM ml_segment_aggregates WHERE model_name = 'sentiment'
              AND segment_dim = 'context.language' AND quantity = 'output.confidence'
              GROUP BY segment_value"
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


@monitor(model="language", version="1")
def detect_language(request: dict) -> str:
    return "es" if request["text"].startswith(("hola", "gracias")) else "en"


@monitor(model="sentiment", version="3")
def classify(request: dict) -> dict:
    # This model is less sure of itself on Spanish: exactly what segwatch should show.
    spanish = request["text"].startswith(("hola", "gracias"))
    confidence = random.betavariate(5, 4) if spanish else random.betavariate(9, 2)
    return {"label": random.choice(["positive", "negative"]), "confidence": round(confidence, 3)}


texts = ["hola, qué tal", "gracias por todo", "hello there", "thanks a lot", "great product"]
for _ in range(500):
    request = {"text": random.choice(texts), "length": random.randint(5, 300)}
    with context(language=detect_language(request)):
        classify(request)
provider.shutdown()
print("sent 1,000 model calls (500 language, 500 sentiment)")
