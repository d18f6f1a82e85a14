"""Scale-out, as it runs: collector processes, each with its own spool, write one store
through ``segwatch serve`` (ClickHouse's HTTP interface), and give, after ClickHouse merges,
exactly the aggregates and the detectors' findings of one collector fed everything; their
schedulers run each detector window once between them.

One store holds all three: the shop's traffic goes whole to one collector as model
``shop-1``, in halves to two as ``shop-2`` and in thirds to three as ``shop-3``; the
models' aggregates and findings must then be equal, name aside. That is the merge
property the design rests on (any number of collectors, any routing), across
processes and over HTTP.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import clickhouse_connect
from collector_process import CollectorProcess, free_port
from shop_traffic import END, traffic
from waiting import wait_until

from segwatch.clickhouse.detection import load_manifest, run_detectors
from segwatch.clickhouse.lease import LEASE_TABLE
from segwatch.collector.cli.demo import service_tracer_provider
from segwatch.collector.service.serving import StoreServer
from segwatch.instrumentation import monitor

# The color shift ends at a 5-minute boundary half an hour ago.
SHIFTED_END = int(time.time()) // 300 * 300 - 1800
AGGREGATES = (
    "SELECT bucket_start, segment_dim, segment_value, quantity, sum(count), sum(sampled), "
    "sum(missing), sum(numeric_count), round(sum(sum), 6), round(sum(sum_sq), 3), min(min), "
    "max(max), sumMap(histogram), sumMap(categories) FROM ml_segment_aggregates "
    "WHERE model_name = {model:String} GROUP BY ALL ORDER BY ALL"
)
TOKEN = "scale-out-token"


def _start(tmp_path: Path, dsn: str, name: str) -> CollectorProcess:
    home = tmp_path / name
    home.mkdir()
    otlp, api = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = home / "collector.yaml"
    config.write_text(
        f"storage:\n  dsn: {dsn}\n  spool:\n    path: {home / 'spool'}\n"
        "    flush_interval: 0.05\n"
        f"receiver:\n  grpc:\n    endpoint: {otlp}\napi:\n  endpoint: {api}\n"
    )
    return CollectorProcess(config, home, {"SEGWATCH_API_TOKEN": TOKEN}, endpoints=(otlp, api))


def _send(collector: CollectorProcess, model_name: str, rows: list[tuple[int, dict]]) -> None:
    provider = service_tracer_provider(collector.otlp, "shop-service")
    model = monitor(model_name, version="1", tracer_provider=provider)
    for second, features in rows:
        at = (second - END + SHIFTED_END) * 1_000_000_000
        with model.call(start_time=at, end_time=at + 1) as call:
            call.features(**features)
    provider.shutdown()


def _scheduled(collector: CollectorProcess) -> tuple[int, int]:
    """The windows this collector's scheduler ran, and those it handled in all (ran, left to
    another collector that claimed them, or failed)."""
    runs = int(collector.call("GET", "/api/v1/status")["detector_runs"])
    metrics = collector.metrics()
    others = sum(
        float(value)
        for value in re.findall(
            r"^segwatch_detector_(?:skipped|failures)_total\{[^}]*\} (\S+)$", metrics, re.M
        )
    )
    return runs, runs + int(others)


def _findings(client, at: int) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    """Each model's new findings for the windows ending ``at``, without what names calls
    (exemplar trace ids differ: each model's calls are sent separately)."""
    found: dict[str, list[tuple]] = {}
    for run in run_detectors(client, dt.datetime.fromtimestamp(at, dt.timezone.utc)):
        for a in run.new_anomalies:
            found.setdefault(a["model_name"], []).append((
                run.detector, a["segment_dim"], a["segment_value"], a["quantity"],
                round(float(a["score"]), 9), a["threshold"], a["support"],
            ))  # fmt: skip
    return {model: sorted(rows) for model, rows in found.items()}


def test_one_two_and_three_collector_processes_give_the_same_aggregates_and_findings(
    store_server: StoreServer, tmp_path: Path
) -> None:
    rows, _, _ = traffic(seed=11, color_weights_now=[0.2, 0.3, 0.5])
    dsn = f"{store_server.url}/segwatch"
    reader = clickhouse_connect.get_client(host="127.0.0.1", port=store_server.door.port,  # type: ignore[union-attr]
                                           database="segwatch")  # fmt: skip

    def claimed() -> list[tuple[str, int]]:
        query = (
            f"SELECT key, count() FROM {LEASE_TABLE} WHERE key LIKE 'claim:detector:%' GROUP BY key"
        )
        return [tuple(row) for row in reader.query(query).result_rows]  # type: ignore[misc]

    collectors = [_start(tmp_path, dsn, f"collector-{i}") for i in range(3)]
    try:
        _send(collectors[0], "shop-1", rows)
        for parts in (2, 3):
            for i in range(parts):  # interleaved in time: every collector sees every minute
                _send(collectors[i], f"shop-{parts}", rows[i::parts])
        for collector in collectors:
            collector.sql("SELECT 1")  # flushes everything it acknowledged
        # At start each scheduler runs the window that closed last, unless another did.
        specs = len(load_manifest())
        wait_until(lambda: sum(_scheduled(c)[1] for c in collectors) >= 3 * specs, timeout=120)
        # Each claimed window ran once, between them: the runs the three count equal the
        # windows claimed (once a run in progress has ended; more if a boundary passed).
        wait_until(lambda: sum(_scheduled(c)[0] for c in collectors) == len(claimed()), 60)
        assert len(claimed()) >= specs
        assert {count for _, count in claimed()} == {1}
    finally:
        codes = [collector.stop() for collector in collectors]
    assert codes == [0, 0, 0]

    reader.command("OPTIMIZE TABLE ml_segment_aggregates FINAL")
    merged = {
        model: reader.query(AGGREGATES, parameters={"model": model}).result_rows
        for model in ("shop-1", "shop-2", "shop-3")
    }
    assert len(merged["shop-1"]) > 100
    assert merged["shop-2"] == merged["shop-1"]
    assert merged["shop-3"] == merged["shop-1"]
    calls = reader.query(
        "SELECT model_name, count() FROM ml_model_calls GROUP BY ALL ORDER BY ALL"
    ).result_rows
    assert calls == [(f"shop-{n}", len(rows)) for n in (1, 2, 3)]

    findings = _findings(reader, SHIFTED_END)
    assert ("psi_drift", "__all__", "__all__", "feature.color") in {
        f[:4] for f in findings["shop-1"]
    }
    assert findings["shop-2"] == findings["shop-1"]
    assert findings["shop-3"] == findings["shop-1"]
