"""Three collectors' schedulers on one store: each detector window runs once, alerts go out once.

Each scheduler has a client of its own on one embedded store (chdb lets one
process open a store directory through several clients), as three collector
processes on one ClickHouse server would; a shared fake clock walks them over
the windows in which the shop's color mix shifts and settles again. The
notifiers record what they are sent instead of delivering it (the OTLP and
webhook notifiers have tests of their own).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from shop_traffic import END, ingest_color_shift
from waiting import wait_until

from segwatch.clickhouse.detection import load_manifest
from segwatch.clickhouse.lease import LEASE_TABLE
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.metrics import CollectorMetrics
from segwatch.collector.service.scheduler import DetectorScheduler

LATENESS = 15.0
FIVE_MINUTES = 300
# psi_drift finds the shift from the window ending 5 minutes before END and, 2 of 3
# windows being its persistence, opens it at END; it resolves 20 minutes later.
WINDOW_ENDS = list(range(END - FIVE_MINUTES, END + 4 * FIVE_MINUTES + 1, FIVE_MINUTES))


class RecordingNotifier:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    def notify(self, transitions: Sequence[dict[str, Any]]) -> None:
        self.received.extend(transitions)

    def close(self) -> None:
        pass


@pytest.fixture
def clients(client, store_dsn: str) -> Iterator[list]:  # type: ignore[no-untyped-def,type-arg]
    others = [open_client(parse_dsn(store_dsn)) for _ in range(2)]
    yield [client, *others]
    for other in others:
        other.close()


def test_three_schedulers_run_each_window_once_and_alert_once(clients, recorder) -> None:
    ingest_color_shift(clients[0], recorder)
    spec = next(s for s in load_manifest() if s.name == "psi_drift")
    now = [WINDOW_ENDS[0] - 1.0]  # just before the first boundary
    notifiers = [RecordingNotifier() for _ in clients]
    metrics = CollectorMetrics()
    schedulers = [
        DetectorScheduler(
            client,
            [spec],
            lateness=LATENESS,
            clock=lambda: now[0],
            notifiers=[notifier],
            metrics=metrics,
            poll=0.05,
        )
        for client, notifier in zip(clients, notifiers, strict=True)
    ]
    for scheduler in schedulers:
        scheduler.start()
    try:
        for done, window_end in enumerate(WINDOW_ENDS, start=1):
            now[0] = window_end + LATENESS + 0.5  # every scheduler finds this window due
            wait_until(lambda done=done: _handled(schedulers) == len(clients) * done)
    finally:
        for scheduler in schedulers:
            scheduler.shutdown()

    assert [s.failures for s in schedulers] == [0, 0, 0]
    assert sum(s.runs for s in schedulers) == len(WINDOW_ENDS)  # each window once in all
    assert sum(s.skipped for s in schedulers) == 2 * len(WINDOW_ENDS)
    skipped = metrics.registry.get_sample_value(
        "segwatch_detector_skipped_total", {"detector": "psi_drift"}
    )
    assert skipped == 2 * len(WINDOW_ENDS)
    claims = clients[0].query(f"SELECT count() FROM {LEASE_TABLE} WHERE lease = ''")
    assert claims.result_rows == [(len(WINDOW_ENDS),)]

    sent = sorted(_transition(t) for n in notifiers for t in n.received)
    assert sent == [
        ("open", "feature.color", "__all__", END),
        ("resolved", "feature.color", "__all__", END + 4 * FIVE_MINUTES),
    ]
    stored = (
        clients[0]
        .query(
            "SELECT state, quantity, segment_value, toUnixTimestamp(window_end) "
            "FROM ml_anomaly_events FINAL ORDER BY ALL"
        )
        .result_rows
    )
    assert [tuple(row) for row in stored] == sent


def _handled(schedulers: list[DetectorScheduler]) -> int:
    return sum(s.runs + s.skipped + s.failures for s in schedulers)


def _transition(row: dict[str, Any]) -> tuple[str, str, str, int]:
    return row["state"], row["quantity"], row["segment_value"], int(row["window_end"].timestamp())
