"""``segwatch_open_anomalies{model, detector, segment_dim}`` on the collector's ``/metrics``.

The scheduler reads the store's open anomalies (``ml_anomaly_events``) at its
start and after each turn, and ``/metrics`` serves what it last read.
"""

from __future__ import annotations

import dataclasses
import shutil
import urllib.request
from pathlib import Path

from demo_transitions import BR_DRIFT_TRANSITIONS
from shop_traffic import ingest_color_shift
from waiting import wait_until

from segwatch.clickhouse.detection import load_manifest
from segwatch.clickhouse.lifecycle import Persistence
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config import ApiConfig, CollectorConfig, ReceiverConfig, StorageConfig
from segwatch.collector.metrics import CollectorMetrics, open_anomalies_gauge
from segwatch.collector.service.collector import Collector
from segwatch.collector.service.scheduler import DetectorScheduler


def _scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_a_collector_serves_the_stores_open_anomalies_from_its_start(
    demo_store: Path, tmp_path: Path
) -> None:
    """A real collector, its scheduler on, on a copy of the demo's store with one psi_drift
    anomaly open and one resolved in fraud / feature.country: its /metrics says 1 (the
    resolved one does not count) without any detector run of its own."""
    store = tmp_path / "store"
    shutil.copytree(demo_store, store, symlinks=True)  # the store links its tables relatively
    client = open_client(parse_dsn(f"chdb://{store}"))
    try:
        client.command(BR_DRIFT_TRANSITIONS)
    finally:
        client.close()
    collector = Collector(CollectorConfig(
        storage=StorageConfig(dsn=f"chdb://{store}"),
        receiver=ReceiverConfig(endpoint="127.0.0.1:0"),
        api=ApiConfig(endpoint="127.0.0.1:0"),
    ))  # fmt: skip
    collector.start()
    try:
        assert collector.api is not None
        url = collector.api.local_url
        wanted = (
            'segwatch_open_anomalies{detector="psi_drift",model="fraud",'
            'segment_dim="feature.country"} 1.0'
        )
        wait_until(lambda: wanted in _scrape(url).splitlines(), timeout=60)
        exposition = _scrape(url)
    finally:
        collector.shutdown()
    assert "# TYPE segwatch_open_anomalies gauge" in exposition
    assert "take the max" in exposition  # the help says how to aggregate collectors


def test_a_scheduled_run_that_opens_an_anomaly_sets_the_gauge(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """psi_drift on the shop's color shift, opening on its first finding (persistence 1 of
    1): after the run, the gauge counts the anomaly under the run's model, detector and
    segment dimension, as ml_anomaly_events has it."""
    end = ingest_color_shift(client, recorder)
    spec = dataclasses.replace(load_manifest()[0], persistence=Persistence(found=1, windows=1))
    times = iter([end - 1.0])  # then past the boundary `end` and its lateness: the run is due

    def clock() -> float:
        return float(next(times, end + 20.0))

    metrics = CollectorMetrics()
    assert "segwatch_open_anomalies{" not in metrics.exposition().decode()
    scheduler = DetectorScheduler(client, [spec], lateness=15.0, clock=clock, metrics=metrics)
    scheduler.start()
    try:
        wait_until(lambda: "segwatch_open_anomalies{" in metrics.exposition().decode())
        wait_until(lambda: scheduler.runs + scheduler.failures == 1)
        wait_until(lambda: 'model="shop"' in metrics.exposition().decode())
    finally:
        scheduler.shutdown()
    assert (scheduler.runs, scheduler.failures) == (1, 0)
    opened = client.query(
        "SELECT detector, model_name, segment_dim, count() FROM ml_anomaly_events FINAL "
        "WHERE state = 'open' GROUP BY ALL"
    ).result_rows
    assert opened, "the run opened nothing"
    lines = metrics.exposition().decode().splitlines()
    for detector, model, dimension, count in opened:
        line = (
            f'segwatch_open_anomalies{{detector="{detector}",model="{model}",'
            f'segment_dim="{dimension}"}} {float(count)}'
        )
        assert line in lines
    # ... and the incident the anomaly opened, under its root's detector.
    incidents = client.query(
        "SELECT model_name, root_detector, count() FROM ml_incidents WHERE state = 'open' "
        "GROUP BY ALL"
    ).result_rows
    assert incidents, "the anomaly opened no incident"
    for model, detector, count in incidents:
        line = (
            f'segwatch_open_incidents{{model="{model}",root_detector="{detector}"}} {float(count)}'
        )
        assert line in lines


def test_a_key_whose_anomalies_resolved_stays_at_zero() -> None:
    gauge = open_anomalies_gauge()
    assert [s for family in gauge.collect() for s in family.samples] == []
    gauge.update({("fraud", "psi_drift", "feature.country"): 2, ("shop", "volume", "__all__"): 1})
    gauge.update({("shop", "volume", "__all__"): 3})
    samples = {
        (s.labels["model"], s.labels["detector"], s.labels["segment_dim"]): s.value
        for family in gauge.collect()
        for s in family.samples
    }
    assert samples == {
        ("fraud", "psi_drift", "feature.country"): 0,
        ("shop", "volume", "__all__"): 3,
    }
