"""kill -9 under load: every span whose Export was acknowledged is stored, none twice.

A real collector subprocess on an embedded store takes model calls from the
OTel SDK's OTLP exporter; it is killed with SIGKILL mid-stream, restarted on
the same store and spool, and asked (through its API, which flushes first)
what it stored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

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


def _start(config: Path, store: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    discovery = store / "segwatch-collector.json"
    discovery.unlink(missing_ok=True)
    log = open(store.parent / "collector.log", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        [sys.executable, "-m", "segwatch.collector.cli", "collector", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    wait_until(lambda: discovery.exists() or process.poll() is not None, timeout=60)
    assert process.poll() is None, "the collector did not start"
    return process, json.loads(discovery.read_text())


def _sql(found: dict[str, str], query: str) -> list[list[object]]:
    """A query through the collector's API, with the token from its discovery file."""
    request = urllib.request.Request(
        f"{found['api']}/api/v1/sql",
        data=json.dumps({"query": query}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {found['token']}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return list(json.loads(response.read())["rows"])


def test_acknowledged_spans_survive_kill_9_exactly_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"storage:\n  dsn: chdb://{store}\n  spool:\n    flush_interval: 0.5\n"
        "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        "api:\n  endpoint: 127.0.0.1:0\nscheduler:\n  enabled: false\n"
    )
    process, found = _start(config, store)
    exporter = _AcknowledgedSpans(found["otlp_grpc"])
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
        os.kill(process.pid, signal.SIGKILL)  # mid-stream: flushes and acks in flight
        process.wait(timeout=30)
        wait_until(lambda: exporter.failed > 0, timeout=60)  # the SDK saw the collector die
    finally:
        stop.set()
        sender.join()
        provider.shutdown()
    acked = set(exporter.acked)

    process, found = _start(config, store)  # same store, same spool: replays
    try:
        rows = _sql(found, "SELECT span_id FROM ml_model_calls")
        stored = [str(r[0]) for r in rows]
        totals = _sql(
            found,
            "SELECT sum(count), sum(sampled) FROM ml_segment_aggregates "
            "WHERE segment_dim = '__all__' AND quantity = 'output.score'",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert len(acked) >= 3000
    assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged spans were lost"
    assert len(stored) == len(set(stored)), "a span was stored twice"
    # The aggregates count every stored call exactly once too.
    assert totals == [[float(len(stored)), len(stored)]]
