"""The ingest benchmark's payload and its two decode baselines.

The payload is the one issue 4 sets targets on: requests of model-call spans
encoded by the real OTel SDK encoder, each span with 20 features, 3 outputs, 5
segment dimensions and 2 crosses (:func:`models_config` gives the collector
that config). The baselines read the same bytes: the bare protobuf decode
(upb), and the decode plus one Python pass over every attribute (the naive way
to read spans).
"""

from __future__ import annotations

import random
import time

import numpy as np
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from segwatch.instrumentation import monitor

__all__ = [
    "TraceIdRewriter",
    "bench_attribute_pass",
    "bench_decode",
    "build_payload",
    "models_config",
]

COUNTRIES = ["US", "BR", "DE", "FR", "IN", "MX", "GB"]


def models_config(model: str, top_k: int) -> str:
    """The config's ``segments`` and ``models`` sections for ``model``'s spans.

    Five segment dimensions (country, device, channel, amount, hour) and two
    crosses; the other fifteen features are measured, not segmented.
    """
    return (
        f"segments:\n  top_k: {top_k}\n  crosses: [[country, device], [channel, amount]]\n"
        f"models:\n  {model}:\n    features:\n"
        "      country: {type: category}\n"
        "      device: {type: category}\n"
        "      channel: {type: category}\n"
        "      amount: {type: number, segments: {log: {base: 10}}}\n"
        "      hour: {type: number, segments: {linear: {width: 6}}}\n"
        + "".join(f"      f{j}: {{type: number, segment: false}}\n" for j in range(15))
    )


def build_payload(
    spans_per_request: int,
    seed: int = 1,
    countries: int = 7,
    devices: int = 3,
    model: str = "fraud",
) -> bytes:
    """One serialized request of ``model``'s spans: 20 features, 3 outputs.

    Five features are segment dimensions and two crosses are declared (see
    :func:`models_config`). Span start times spread over the 5 seconds before
    now, like one batch of the SDK's BatchSpanProcessor (it exports every 5 s).
    """
    rng = random.Random(seed)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monitored = monitor(model, version="2.3", tracer_provider=provider)
    start = time.time() - 5
    for _ in range(spans_per_request):
        at = int((start + rng.random() * 5) * 1e9)
        with monitored.call(start_time=at, end_time=at + 1_000_000) as call:
            features = {f"f{j}": round(rng.gauss(j, 1 + j / 5), 3) for j in range(15)}
            call.features(
                country=rng.choice(COUNTRIES[:countries])
                if countries <= 7
                else f"c{rng.randrange(countries)}",
                device=rng.choice(["ios", "android", "web"])
                if devices <= 3
                else f"d{rng.randrange(devices)}",
                channel=rng.choice(["app", "site", "pos"]),
                amount=round(rng.lognormvariate(3.9, 0.8), 2),
                hour=rng.randint(0, 23),
                **features,
            )
            call.outputs(score=round(rng.random(), 4), label=rng.choice(["ok", "review"]),
                         latency_ms=round(rng.expovariate(0.2), 2))  # fmt: skip
    payload = encode_spans(exporter.get_finished_spans()).SerializeToString()
    provider.shutdown()
    return bytes(payload)


def bench_decode(payload: bytes, repeat: int) -> float:
    """Spans/s of the bare protobuf decode of ``payload``, ``repeat`` times."""
    started = time.perf_counter()
    spans = 0
    for _ in range(repeat):
        request = ExportTraceServiceRequest.FromString(payload)
        spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
    return spans / (time.perf_counter() - started)


def bench_attribute_pass(payload: bytes, repeat: int) -> float:
    """Spans/s of the decode plus one Python pass touching every attribute's key and value."""
    started = time.perf_counter()
    spans = 0
    for _ in range(repeat):
        request = ExportTraceServiceRequest.FromString(payload)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans += 1
                    for kv in span.attributes:
                        key = kv.key
                        value = kv.value
                        kind = value.WhichOneof("value")
                        if kind is not None:
                            getattr(value, kind)
                        del key
    return spans / (time.perf_counter() - started)


class TraceIdRewriter:
    """Copies of a payload, each with fresh random trace ids (the bytes around them kept).

    A bench that sent one payload over and over would send the same trace ids
    every time: the trace-id sample would keep the same traces, and each flush
    would pick as exemplars the calls the previous one picked. Each request of
    real traffic brings traces never seen before; so do these copies.
    """

    def __init__(self, payload: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(payload)
        ids = [span.trace_id for r in request.resource_spans for s in r.scope_spans
               for span in s.spans]  # fmt: skip
        at, start = [], 0
        for trace_id in ids:  # the spans are serialized in order: each id after the last
            found = payload.index(b"\x0a\x10" + trace_id, start) + 2
            at.append(found)
            start = found + 16
        self._payload = payload
        self._bytes = (np.asarray(at, dtype=np.int64)[:, None] + np.arange(16)).ravel()

    def copy(self, seed: int) -> bytes:
        """The payload with trace ids drawn from ``seed``."""
        buf = np.frombuffer(bytearray(self._payload), dtype=np.uint8)
        buf[self._bytes] = np.random.default_rng(seed).integers(0, 256, len(self._bytes),
                                                                dtype=np.uint8)  # fmt: skip
        return buf.tobytes()
