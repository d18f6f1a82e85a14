"""The scheduler runs detectors on their cadence and writes ml_anomalies."""

from __future__ import annotations

import time

from shop_traffic import ingest_color_shift

from segwatch.clickhouse.detection import load_manifest
from segwatch.collector.service.scheduler import DetectorScheduler


def test_scheduler_runs_due_detectors_and_stores_their_anomalies(client, recorder) -> None:
    end = ingest_color_shift(client, recorder)
    spec = load_manifest()[0]
    # A clock that starts just before the boundary `end`, then jumps past it
    # (and past the lateness), so the run for the window ending at `end` is due.
    times = iter([end - 1.0])

    def clock() -> float:
        return next(times, end + 20.0)

    scheduler = DetectorScheduler(client, [spec], lateness=15.0, clock=clock)
    scheduler.start()
    try:
        deadline = time.monotonic() + 60
        while scheduler.runs + scheduler.failures == 0:
            assert time.monotonic() < deadline, "the detector never ran"
            time.sleep(0.05)
    finally:
        scheduler.shutdown()
    assert (scheduler.runs, scheduler.failures) == (1, 0)
    rows = client.query("SELECT quantity, window_end FROM ml_anomalies").result_rows
    assert [r[0] for r in rows] == ["feature.color"]
    assert int(rows[0][1].timestamp()) == end
