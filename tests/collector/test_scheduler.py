"""The scheduler runs detectors on their cadence and writes ml_anomalies."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

from counting_client import CountingClient
from shop_traffic import ingest_color_shift
from waiting import wait_until

from segwatch.clickhouse.detection import load_manifest
from segwatch.clickhouse.lease import LEASE_TABLE
from segwatch.clickhouse.store import open_client, parse_dsn
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


def test_at_start_the_window_that_closed_last_runs_once_then_the_cadence_resumes(
    client, recorder
) -> None:
    """Started mid-cadence (100 s past the boundary END, the lateness long past): the window
    ending at END, whose boundary passed while no scheduler ran, runs once, ``lateness``
    after the start; the next run is due ``lateness`` past the next boundary."""
    end = ingest_color_shift(client, recorder)
    spec = load_manifest()[0]
    lateness, start = 15.0, end + 100.0
    now, reads = [start], [0]

    def clock() -> float:
        reads[0] += 1
        return now[0]

    def at(moment: float) -> None:
        """Move the clock to ``moment`` and wait for a whole turn of the scheduler's loop
        after it (three readings of the clock: the loop reads it at its top and again to
        know how long to sleep)."""
        seen = reads[0]
        now[0] = moment
        wait_until(lambda: reads[0] >= seen + 3, timeout=30)

    scheduler = DetectorScheduler(client, [spec], lateness=lateness, clock=clock, poll=0.05)
    scheduler.start()
    try:
        at(start + lateness - 1)
        assert scheduler.runs + scheduler.failures == 0  # not before start + lateness
        at(start + lateness)
        assert (scheduler.runs, scheduler.failures) == (1, 0)
        at(end + spec.cadence + lateness - 1)
        assert scheduler.runs == 1  # once, not again before the next boundary's turn
        at(end + spec.cadence + lateness)  # start + cadence would be 85 s later
        assert (scheduler.runs, scheduler.failures) == (2, 0)
    finally:
        scheduler.shutdown()
    rows = client.query(
        "SELECT quantity, toUnixTimestamp(window_end) FROM ml_anomalies ORDER BY window_end"
    )  # the shift is still inside the second run's 15-minute window
    assert [tuple(row) for row in rows.result_rows] == [
        ("feature.color", end),
        ("feature.color", end + spec.cadence),
    ]
    claims = client.query(f"SELECT key FROM {LEASE_TABLE} WHERE lease = '' ORDER BY key")
    windows = [dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in (end, end + spec.cadence)]
    assert [key for (key,) in claims.result_rows] == [
        f"claim:detector:{spec.name}:{window.isoformat()}" for window in windows
    ]


def test_a_turn_runs_its_detectors_on_two_sessions_and_one_failing_stops_no_other(
    client, recorder, store_dsn
) -> None:
    """The detectors due at one boundary run as a group, their queries on the scheduler's
    session and its helper at once: a detector that fails counts as a failure, the
    others of the turn still run and store their findings."""
    end = ingest_color_shift(client, recorder)
    psi = load_manifest()[0]
    # it fails after half a second: the helper has taken psi_drift by then
    failing = "SELECT throwIf(sleepEachRow(0.5) = 0, 'broken') FROM numbers(1)"
    broken = dataclasses.replace(psi, name="broken", sql=failing)
    times = iter([end - 1.0])

    def clock() -> float:
        return next(times, end + 20.0)

    helper = CountingClient(open_client(parse_dsn(store_dsn)))
    scheduler = DetectorScheduler(
        client, [broken, psi], lateness=15.0, clock=clock, helpers=[helper]
    )
    scheduler.start()
    try:
        wait_until(lambda: scheduler.runs + scheduler.failures == 2, timeout=60)
    finally:
        scheduler.shutdown()
        helper.close()
    assert (scheduler.runs, scheduler.failures) == (1, 1)
    assert helper.statements > 0  # one of the two ran on the helper session
    rows = client.query("SELECT detector, quantity FROM ml_anomalies").result_rows
    assert rows == [("psi_drift", "feature.color")]
