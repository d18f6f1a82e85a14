"""Instrumentation overhead: a monitored call beside a bare OTel SDK span, same run.

1. Per call, 20 features and 2 outputs: p50 and p99 of ``@monitor`` around a
   trivial model, beside the same work done with a bare SDK span that sets the
   same 22 attributes by hand (the least any instrumentation must do). Both use
   the same SDK TracerProvider with a span processor that drops spans, so only
   the caller's cost is timed. Target: ratio at most 1.25 at p50.
2. A batch of 10,000 rows × 20 features (a DataFrame): the monitored call plus
   the OTLP encoding of its span, per row. Target: at most 2 µs per row.

Run: ``python bench/instrumentation.py``.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import numpy as np
import pandas as pd
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from segwatch.instrumentation import monitor

CALLS = 10_000
ROUNDS = 5


class DropSpans(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        pass


def _features(i: int) -> dict[str, Any]:
    row: dict[str, Any] = {f"num_{j}": float(i % 97) * j + 0.5 for j in range(12)}
    row.update({f"cat_{j}": ("a", "b", "c", "d")[(i + j) % 4] for j in range(8)})
    return row


def _percentiles(samples: list[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] / 1e3, ordered[int(len(ordered) * 0.99)] / 1e3


def bench_per_call() -> tuple[tuple[float, float], tuple[float, float], float]:
    provider = TracerProvider()
    provider.add_span_processor(DropSpans())
    tracer = provider.get_tracer("bench")
    rows = [_features(i) for i in range(CALLS)]

    @monitor(model="bench", version="1", tracer_provider=provider)
    def monitored(row: dict[str, Any]) -> dict[str, Any]:
        return {"score": 0.5, "label": "ok"}

    def bare(row: dict[str, Any]) -> dict[str, Any]:
        with tracer.start_as_current_span(
            "predict bench",
            attributes={"ml.model.name": "bench", "ml.model.version": "1",
                        "ml.model.stage": "serving", "ml.operation": "predict"},
        ) as span:  # fmt: skip
            result = {"score": 0.5, "label": "ok"}
            attributes = {"ml.feature." + k: v for k, v in row.items()}
            attributes.update({"ml.output." + k: v for k, v in result.items()})
            span.set_attributes(attributes)
            return result

    # Rounds alternate between the two so that changes in machine load hit both
    # alike; the ratio reported is the median of the per-round p50 ratios.
    timings: dict[str, list[int]] = {"monitor": [], "bare": []}
    ratios = []
    for _ in range(ROUNDS):
        p50 = {}
        for name, func in (("bare", bare), ("monitor", monitored)):
            gc.disable()
            samples = []
            for row in rows:
                started = time.perf_counter_ns()
                func(row)
                samples.append(time.perf_counter_ns() - started)
            gc.enable()
            timings[name].extend(samples)
            p50[name] = sorted(samples)[len(samples) // 2]
        ratios.append(p50["monitor"] / p50["bare"])
    ratios.sort()
    return _percentiles(timings["monitor"]), _percentiles(timings["bare"]), ratios[len(ratios) // 2]


def bench_batch(rows: int = 10_000) -> float:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"num_{j}": rng.normal(size=rows) for j in range(12)})
    for j in range(8):
        frame[f"cat_{j}"] = rng.choice(["a", "b", "c", "d"], rows)

    @monitor(model="bench", tracer_provider=provider)
    def predict(batch: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(batch))

    best = float("inf")
    for _ in range(5):
        exporter.clear()
        started = time.perf_counter()
        predict(frame)
        encode_spans(exporter.get_finished_spans()).SerializeToString()
        best = min(best, time.perf_counter() - started)
    return best / rows * 1e6


def parse_args() -> argparse.Namespace:
    """No options: ``--help`` prints what the bench measures, and how to run it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser.parse_args()


def main() -> None:
    parse_args()
    (m50, m99), (b50, b99), round_ratio = bench_per_call()
    print(f"per call, 20 features + 2 outputs ({CALLS} calls x {ROUNDS} rounds):")
    print(f"  bare OTel span        p50 {b50:7.2f} us   p99 {b99:7.2f} us")
    print(f"  segwatch monitor      p50 {m50:7.2f} us   p99 {m99:7.2f} us")
    print(f"  ratio monitor / bare  p50 {m50 / b50:7.3f}      p99 {m99 / b99:7.3f}")
    print(f"  median of per-round p50 ratios {round_ratio:.3f}   (target <= 1.25)")
    per_row = bench_batch()
    print("batch of 10,000 rows x 20 features, call + OTLP encoding:")
    print(f"  {per_row:.3f} us per row   (target <= 2 us)")


if __name__ == "__main__":
    main()
