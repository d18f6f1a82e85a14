"""The collector as an SRE runs it: probes, metrics, JSON logs, SIGTERM, secrets kept out of sight.

A real collector subprocess on an embedded store, with a receiver token
from its environment; the OTel SDK's exporter sends to it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from waiting import wait_until

from segwatch.instrumentation import monitor

TOKEN = "tok-3f9a1c0b5e7d2468-never-logged"


def _read(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_probes_metrics_json_logs_and_a_graceful_sigterm_that_flushes(
    tmp_path: Path, recorder
) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    config = tmp_path / "collector.yaml"
    # Flushes every 60 s: at SIGTERM the calls are in the spool only, the shutdown writes them.
    config.write_text(
        f"storage:\n  dsn: chdb://{store}\n  spool:\n    flush_interval: 60\n"
        "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        "api:\n  endpoint: 127.0.0.1:0\nscheduler:\n  enabled: false\n"
    )
    log = tmp_path / "collector.log"
    env = {**os.environ, "SEGWATCH_RECEIVER_TOKEN": TOKEN}
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "segwatch.collector.cli", "--log-format", "json",
             "collector", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=sink, env=env,
        )  # fmt: skip
    try:
        discovery = store / "segwatch-collector.json"
        wait_until(lambda: discovery.exists() or process.poll() is not None, timeout=60)
        assert process.poll() is None, log.read_text()
        found = json.loads(discovery.read_text())
        api = found["api"]
        assert _read(f"{api}/healthz")[0] == 200
        code, ready = _read(f"{api}/readyz")
        assert code == 200 and json.loads(ready) == {"ready": True, "problems": []}

        model = monitor("fraud", version="1", tracer_provider=recorder.provider)
        for i in range(30):
            with model.call() as call:
                call.features(amount=float(i))
        tracer = recorder.provider.get_tracer("test")
        with tracer.start_as_current_span("predict fraud") as span:  # unusable weight: rejected
            span.set_attribute("ml.model.name", "fraud")
            span.set_attribute("ml.sample.weight", -1.0)
        exporter = OTLPSpanExporter(endpoint=found["otlp_grpc"], insecure=True, timeout=10,
                                    headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert exporter.export(recorder.spans()) == SpanExportResult.SUCCESS
        exporter.shutdown()

        code, metrics = _read(f"{api}/metrics")
        assert code == 200
        lines = set(metrics.splitlines())
        assert "segwatch_spans_accepted_total 30.0" in lines
        assert 'segwatch_spans_rejected_total{reason="invalid"} 1.0' in lines
        assert 'segwatch_otlp_requests_total{code="OK",signal="traces"} 1.0' in lines
        assert any(line.startswith("segwatch_spool_bytes ") and not line.endswith(" 0.0")
                   for line in lines)  # fmt: skip
        assert "segwatch_store_insert_seconds_count 0.0" in lines  # nothing flushed yet

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert records[-1]["message"] == "collector stopped"
    assert {"time", "level", "logger", "message", "thread"} <= records[-1].keys()
    assert TOKEN not in log.read_text()
    # What the SIGTERM flushed is in the store, and the spool holds nothing more to replay.
    from segwatch.clickhouse.store import open_client, parse_dsn

    client = open_client(parse_dsn(f"chdb://{store}"))
    try:
        assert client.query("SELECT count() FROM ml_model_calls").result_rows == [(30,)]
    finally:
        client.close()
    flushed = (store / "segwatch-spool" / "flushed").read_text()
    assert flushed != "0.0"


def test_help_names_the_secret_variables_but_never_their_values() -> None:
    env = {**os.environ, "SEGWATCH_RECEIVER_TOKEN": TOKEN, "SEGWATCH_API_TOKEN": TOKEN}
    for command in (["--help"], ["collector", "--help"], ["sql", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "segwatch.collector.cli", *command],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )  # fmt: skip
        assert TOKEN not in result.stdout + result.stderr
        if command[0] == "collector":
            assert "SEGWATCH_RECEIVER_TOKEN" in result.stdout
            assert "SEGWATCH_API_TOKEN" in result.stdout
