"""Exactly once, whatever the timing: interrupted flushes replayed whole, poison flushes set aside.

Real collector subprocesses on one embedded store and spool, fed by the OTel
SDK's OTLP exporter. The crash lands where a random kill -9 rarely does,
between an insert landing in the store and the spool marking it flushed,
through a failpoint (``SEGWATCH_FAILPOINTS``, :mod:`segwatch.collector.durable.failpoints`).
The sizes are the ones that broke it: tens of thousands of batch calls with
100 features take far longer to decode again than the flush interval of the
next run, and the next run flushes in smaller pieces.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from collector_process import CollectorProcess, api_dies
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from waiting import wait_until

from segwatch.instrumentation import monitor

# 200 rows of 100 doubles: a 160 KB ml.batch.columns, under the 256 KiB attribute limit.
SPANS, ROWS, FEATURES = 100, 200, 100
COUNTS = (
    "SELECT (SELECT count() FROM ml_model_calls WHERE model_name = '{model}'), "
    "(SELECT sum(sampled) FROM ml_segment_aggregates WHERE model_name = '{model}' "
    "AND segment_dim = '__all__' AND quantity = 'output.score')"
)


def _config(tmp_path: Path, store: Path, **spool: object) -> Path:
    path = tmp_path / "collector.yaml"
    settings = "".join(f"    {key}: {value}\n" for key, value in spool.items())
    path.write_text(
        f"storage:\n  dsn: chdb://{store}\n  spool:\n{settings}"
        "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        "api:\n  endpoint: 127.0.0.1:0\nscheduler:\n  enabled: false\n"
    )
    return path


def _send_batches(endpoint: str, model_name: str, spans: int = SPANS) -> None:
    """``spans`` batch spans of ``ROWS`` calls with ``FEATURES`` features, each acknowledged."""
    exporter = OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=30)
    results: list[SpanExportResult] = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span):  # type: ignore[no-untyped-def]
            results.append(exporter.export((span,)))

    provider = TracerProvider()
    provider.add_span_processor(Recording(exporter))
    model = monitor(model_name, version="1", tracer_provider=provider)
    rng = np.random.default_rng(7)
    for _ in range(spans):
        features = {f"f{j:03d}": rng.normal(size=ROWS) for j in range(FEATURES)}
        with model.call() as call:
            call.batch(ROWS, features=features, outputs={"score": rng.random(ROWS)})
    provider.shutdown()
    assert results == [SpanExportResult.SUCCESS] * spans


def test_an_interrupted_flush_is_replayed_whole_whatever_the_flush_settings(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    # Run 1: one flush of every call; it dies after the insert landed, before the mark.
    config = _config(tmp_path, store, flush_interval=60, flush_calls=100_000,
                     max_pending_calls=200_000)  # fmt: skip
    first = CollectorProcess(config, store, {"SEGWATCH_FAILPOINTS": "exit-after-insert=1"})
    _send_batches(first.otlp, "wide")
    assert api_dies(first, "SELECT 1"), "the failpoint did not fire"  # the query flushes first
    assert first.process.returncode == 137

    # Run 2: flushes of 1,000 calls every 10 ms, at most 2,000 waiting: far smaller than the
    # interrupted flush, and far quicker than decoding it again. It dies after its first
    # insert (the replay) again.
    config = _config(tmp_path, store, flush_interval=0.01, flush_calls=1_000,
                     max_pending_calls=2_000)  # fmt: skip
    second = CollectorProcess(
        config, store, {"SEGWATCH_FAILPOINTS": "exit-after-insert=1"}, started=False
    )
    assert second.wait_dead() == 137, "the replay did not flush"

    # Run 3: other settings again; everything is stored exactly once, in both tables.
    config = _config(tmp_path, store, flush_interval=0.02, flush_calls=500)
    third = CollectorProcess(config, store)
    try:
        counts = third.sql(COUNTS.format(model="wide"))
    finally:
        assert third.stop() == 0
    assert counts == [[SPANS * ROWS, SPANS * ROWS]]


def _spool_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "spool", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_flush_failing_for_its_data_is_set_aside_and_can_be_requeued(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = _config(tmp_path, store, flush_interval=0.05, max_flush_attempts=3)
    # Aggregating model 'poison' raises, as a bug would; 'fraud' is fine.
    broken = CollectorProcess(config, store, {"SEGWATCH_FAILPOINTS": "aggregate-error=poison"})
    try:
        for letters in (1, 2):  # two poison flushes, one after the other
            _send_batches(broken.otlp, "poison", spans=1)
            wait_until(
                lambda n=letters: f"segwatch_dead_letter_flushes_total {n}.0" in broken.metrics(),
                timeout=120,
            )
        _send_batches(broken.otlp, "fraud", spans=2)  # not blocked behind the poison
        assert broken.sql(COUNTS.format(model="fraud")) == [[2 * ROWS, 2 * ROWS]]
        assert broken.sql(COUNTS.format(model="poison")) == [[0, 0]]
        assert f"segwatch_dead_letter_calls_total {2 * ROWS}.0" in broken.metrics()
    finally:
        assert broken.stop() == 0
    assert broken.log().count(f"set aside {ROWS} model calls after 3 failed flushes") == 2
    assert f"2 dead letters ({2 * ROWS} model calls) wait in" in broken.log()  # said at exit
    listed = _spool_cli(config, "--json")
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)["rows"]
    assert [row[2] for row in letters] == [ROWS, ROWS]
    assert all("failpoint aggregate-error" in row[3] for row in letters)

    # The bug is fixed (no failpoint). One letter goes into the spool while no collector
    # runs, the other through the running collector: each is stored once, and forgotten.
    first, second = (row[0] for row in letters)
    offline = _spool_cli(config, "requeue", first)
    assert offline.stdout == f"requeued 1 dead letter(s), {ROWS} model calls, for the next start\n"
    fixed = CollectorProcess(config, store)
    try:
        assert fixed.sql(COUNTS.format(model="poison")) == [[ROWS, ROWS]]
        online = _spool_cli(config, "requeue", second)
        assert online.returncode == 0, online.stderr
        assert "through the running collector" in online.stdout
        assert fixed.sql(COUNTS.format(model="poison")) == [[2 * ROWS, 2 * ROWS]]
        assert fixed.sql(COUNTS.format(model="fraud")) == [[2 * ROWS, 2 * ROWS]]
        again = _spool_cli(config, "requeue", second)
        assert again.returncode == 1 and f"no dead letter named '{second}'" in again.stderr
    finally:
        assert fixed.stop() == 0
    assert json.loads(_spool_cli(config, "--json").stdout)["rows"] == []
