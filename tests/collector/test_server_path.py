"""The server path, run for real: collectors with ``storage.dsn: http://...`` on a store that
``segwatch serve`` opens to them (ClickHouse's HTTP interface over the embedded engine).

Everything a collector does with a ClickHouse server goes through the door here:
migrations checked, Native inserts with deduplication tokens, analysts' read-only
queries on budgeted sessions, detectors, anomalies; and a kill -9 between an insert
landing and the spool marking it, replayed through HTTP, stores each call once.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import clickhouse_connect
from collector_process import CollectorProcess, api_dies, free_port
from shop_traffic import END, traffic
from waiting import wait_until

from segwatch.clickhouse.migrate import load_migrations
from segwatch.collector.cli.demo import service_tracer_provider
from segwatch.collector.config import (
    ApiConfig,
    CollectorConfig,
    ReceiverConfig,
    SchedulerConfig,
    SpoolConfig,
    StorageConfig,
)
from segwatch.collector.config.serve import ServeConfig
from segwatch.collector.service.collector import Collector
from segwatch.collector.service.serving import StoreServer
from segwatch.instrumentation import monitor

# The shop's traffic, moved so that its color shift ends at a recent 5-minute boundary.
NOW_END = int(time.time()) // 300 * 300 - 300
SHIFT = NOW_END - END


def _collector(dsn: str, spool: Path) -> Collector:
    return Collector(CollectorConfig(
        storage=StorageConfig(dsn=dsn, spool=SpoolConfig(path=str(spool), flush_interval=0.05)),
        receiver=ReceiverConfig(endpoint="127.0.0.1:0"),
        api=ApiConfig(endpoint="127.0.0.1:0"),
        scheduler=SchedulerConfig(enabled=False),
    ))  # fmt: skip


def _send_shop(address: str, rows: list[tuple[int, dict]]) -> None:
    provider = service_tracer_provider(address, "shop-service")
    model = monitor("shop", version="1", tracer_provider=provider)
    for second, features in rows:
        at = (second + SHIFT) * 1_000_000_000
        with model.call(start_time=at, end_time=at + 1) as call:
            call.features(**features)
    provider.shutdown()


def test_a_collector_on_http_stores_queries_and_detects_through_the_door(
    store_server: StoreServer, tmp_path: Path
) -> None:
    rows, _, _ = traffic(seed=3, color_weights_now=[0.2, 0.3, 0.5])
    collector = _collector(f"{store_server.url}/segwatch", tmp_path / "spool")
    collector.start()
    try:
        assert collector.readiness() == []
        assert collector.receiver is not None and collector.processor is not None
        _send_shop(collector.receiver.address, rows)
        wait_until(lambda: collector.processor.stats.model_calls >= len(rows))  # type: ignore[union-attr]
        collector.flush()
        # The store took them: read back through the door by another client, as BI would.
        reader = clickhouse_connect.get_client(
            host="127.0.0.1",
            port=store_server.door.port,
            database="segwatch",  # type: ignore[union-attr]
        )
        assert reader.query("SELECT count() FROM ml_model_calls").result_rows == [(len(rows),)]
        found = collector.detect(dt.datetime.fromtimestamp(NOW_END, dt.timezone.utc))
        assert collector.api is not None
        anomalies = reader.query(
            "SELECT detector, segment_dim, quantity, window_end FROM ml_anomalies"
        ).result_rows
    finally:
        collector.shutdown()
    assert [(row[0], row[4]) for row in found.rows] == [("psi_drift", "feature.color")]
    assert [(a[2], int(a[3].timestamp())) for a in anomalies] == [("feature.color", NOW_END)]


def test_a_collector_on_http_waits_for_segwatch_migrate_and_keeps_what_it_acknowledged(
    tmp_path: Path,
) -> None:
    """A store one migration behind: the collector starts, acknowledges into its spool, says
    why it is not ready; once the migration ran (through the door), everything is stored."""
    from segwatch.clickhouse.migrate import apply_migrations
    from segwatch.clickhouse.store import open_client, parse_dsn
    from segwatch.collector.serve import ClickHouseDoor

    location = parse_dsn(f"chdb://{tmp_path / 'store'}")
    owner = open_client(location)
    shipped = load_migrations()
    apply_migrations(owner, shipped[:-1])
    door = ClickHouseDoor(ServeConfig(endpoint="127.0.0.1:0"), location.path)
    door.start()
    collector = _collector(f"{door.url}/segwatch", tmp_path / "spool")
    try:
        collector.start()
        assert any("segwatch migrate" in problem for problem in collector.readiness())
        assert collector.receiver is not None and collector.processor is not None
        rows, _, _ = traffic(seed=3, color_weights_now=[0.5, 0.3, 0.2])
        _send_shop(collector.receiver.address, rows[:200])
        wait_until(lambda: collector.processor.stats.model_calls >= 200)  # type: ignore[union-attr]
        migrator = clickhouse_connect.get_client(host="127.0.0.1", port=door.port,
                                                 database="segwatch")  # fmt: skip
        assert apply_migrations(migrator) == [shipped[-1].name]
        wait_until(lambda: collector.readiness() == [], timeout=60)
        collector.flush()
        assert migrator.query("SELECT count() FROM ml_model_calls").result_rows == [(200,)]
    finally:
        collector.shutdown()
        door.shutdown()
        owner.close()


COUNTS = (
    "SELECT (SELECT count() FROM ml_model_calls), (SELECT sum(count) FROM ml_segment_aggregates "
    "WHERE segment_dim = '__all__' AND quantity = 'feature.color')"
)


def _config(tmp_path: Path, dsn: str, otlp: str, api: str, **spool: object) -> Path:
    path = tmp_path / "collector.yaml"
    settings = "".join(f"    {key}: {value}\n" for key, value in spool.items())
    path.write_text(
        f"storage:\n  dsn: {dsn}\n  spool:\n    path: {tmp_path / 'spool'}\n{settings}"
        f"receiver:\n  grpc:\n    endpoint: {otlp}\n"
        f"api:\n  endpoint: {api}\nscheduler:\n  enabled: false\n"
    )
    return path


def test_kill_9_after_an_insert_through_http_is_replayed_and_stored_once(
    store_server: StoreServer, tmp_path: Path
) -> None:
    rows, _, _ = traffic(seed=5, color_weights_now=[0.5, 0.3, 0.2])
    endpoints = (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    env = {"SEGWATCH_API_TOKEN": "test-token"}
    config = _config(tmp_path, f"{store_server.url}/segwatch", *endpoints, flush_interval=60,
                     flush_calls=100_000)  # fmt: skip
    crash = {**env, "SEGWATCH_FAILPOINTS": "exit-after-insert=1"}
    first = CollectorProcess(config, tmp_path, crash, endpoints=endpoints)
    _send_shop(first.otlp, rows)
    assert api_dies(first, "SELECT 1"), "the failpoint did not fire"  # the query flushes first
    assert first.process.returncode == 137

    second = CollectorProcess(_config(tmp_path, f"{store_server.url}/segwatch", *endpoints,
                                      flush_interval=0.02, flush_calls=500),
                              tmp_path, env, endpoints=endpoints)  # fmt: skip
    try:
        counts = second.sql(COUNTS)
    finally:
        assert second.stop() == 0
    assert counts == [[len(rows), len(rows)]]


def test_a_collector_can_open_its_own_store_to_clickhouse_clients(tmp_path: Path) -> None:
    """``serve.in_collector``: one process, the collector's store readable over HTTP while it
    writes, and named in the discovery file for the CLI."""
    import json

    collector = Collector(CollectorConfig(
        storage=StorageConfig(dsn=f"chdb://{tmp_path / 'store'}"),
        receiver=ReceiverConfig(endpoint="127.0.0.1:0"),
        api=ApiConfig(endpoint="127.0.0.1:0"),
        scheduler=SchedulerConfig(enabled=False),
        serve=ServeConfig(endpoint="127.0.0.1:0", in_collector=True),
    ))  # fmt: skip
    collector.start()
    try:
        assert collector.door is not None and collector.receiver is not None
        announced = json.loads((tmp_path / "store" / "segwatch-collector.json").read_text())
        assert announced["serve"] == collector.door.url
        rows, _, _ = traffic(seed=3, color_weights_now=[0.5, 0.3, 0.2])
        _send_shop(collector.receiver.address, rows[:100])
        wait_until(lambda: collector.processor.stats.model_calls >= 100)  # type: ignore[union-attr]
        collector.flush()
        reader = clickhouse_connect.get_client(host="127.0.0.1", port=collector.door.port,
                                               database="segwatch")  # fmt: skip
        assert reader.query("SELECT count() FROM ml_model_calls").result_rows == [(100,)]
    finally:
        collector.shutdown()
    assert collector.door is None
