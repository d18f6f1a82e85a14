"""kill -9 under load: every span whose Export was acknowledged is stored, none twice.

A real collector subprocess on an embedded store takes model calls from the
OTel SDK's OTLP exporter; it is killed with SIGKILL mid-stream, restarted on
the same store and spool with other flush settings, and asked (through its
API, which flushes first) what it stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from collector_process import CollectorProcess
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from waiting import wait_until

from segwatch.instrumentation import monitor


class _AcknowledgedSpans(SpanExporter):
    """The SDK's OTLP exporter, remembering the span ids of every batch the collector acked."""

    def __init__(self, endpoint: str) -> None:
        self._inner = OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=2)
        self.acked: set[str] = set()
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.acked.update(format(s.context.span_id, "016x") for s in spans)
        else:
            self.failed += 1
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()


def _write_config(path: Path, store: Path, flush_interval: float, flush_calls: int) -> None:
    path.write_text(
        f"storage:\n  dsn: chdb://{store}\n  spool:\n    flush_interval: {flush_interval}\n"
        f"    flush_calls: {flush_calls}\n"
        "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        "api:\n  endpoint: 127.0.0.1:0\nscheduler:\n  enabled: false\n"
    )


def test_acknowledged_spans_survive_kill_9_exactly_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = tmp_path / "collector.yaml"
    _write_config(config, store, flush_interval=0.5, flush_calls=20_000)
    first = CollectorProcess(config, store)
    exporter = _AcknowledgedSpans(first.otlp)
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_export_batch_size=256, schedule_delay_millis=20)
    )
    model = monitor("fraud", version="1", tracer_provider=provider)
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            with model.call() as call:
                call.features(amount=float(i % 500), country=("BR", "US", "DE")[i % 3])
                call.outputs(score=(i % 100) / 100)
            i += 1
            if i % 256 == 0:
                time.sleep(0.005)  # steady load, not a flood of dropped spans

    sender = threading.Thread(target=load)
    sender.start()
    try:
        wait_until(lambda: len(exporter.acked) >= 3000, timeout=120)
        first.kill()  # SIGKILL mid-stream: flushes and acks in flight
        wait_until(lambda: exporter.failed > 0, timeout=60)  # the SDK saw the collector die
    finally:
        stop.set()
        sender.join()
        provider.shutdown()
    acked = set(exporter.acked)

    # Same store, same spool, other flush settings: it replays, in smaller flushes.
    _write_config(config, store, flush_interval=0.02, flush_calls=100)
    second = CollectorProcess(config, store)
    try:
        stored = [str(r[0]) for r in second.sql("SELECT span_id FROM ml_model_calls")]
        totals = second.sql(
            "SELECT sum(count), sum(sampled) FROM ml_segment_aggregates "
            "WHERE segment_dim = '__all__' AND quantity = 'output.score'"
        )
    finally:
        assert second.stop() == 0
    assert len(acked) >= 3000
    assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged spans were lost"
    assert len(stored) == len(set(stored)), "a span was stored twice"
    # The aggregates count every stored call exactly once too.
    assert totals == [[float(len(stored)), len(stored)]]
