"""Quality on scenarios: a day of three deployments (scenarios.py), with and without faults.

Every injected fault must open an alert naming its culprit segment, ranked first
among its detector's alerts on that quantity; the day without faults must
raise nothing at all. Real engine, real SDK spans, real aggregator: the only
thing simulated is the traffic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scenarios import END, FAULTS, START, Fault, scenario_config, simulate_day

from segwatch.clickhouse.detection import run_detector
from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config import configured_detectors

ALERT_COLUMNS = (
    "detector", "model_name", "model_stage", "segment_dim", "segment_value", "quantity",
    "score", "details", "exemplar_trace_ids",
)  # fmt: skip


@dataclass
class Day:
    calls: int
    segments: int  # (model, version, stage, dimension, value), whole model left out
    alerts: list[dict[str, Any]]  # anomalies opened (ml_anomaly_events)
    findings: list[dict[str, Any]]  # everything any run found (ml_anomalies)
    runs: int


def _simulate(path: Path, *, faults: bool, run_times: list[int]) -> Day:
    """Store the day, run every configured detector at each of ``run_times`` that
    falls on its cadence (in order), and read back what they found."""
    client = open_client(parse_dsn(f"chdb://{path}"))
    try:
        apply_migrations(client)
        calls = simulate_day(client, faults=faults)
        specs = configured_detectors(scenario_config())
        runs = 0
        for at in run_times:
            for spec in specs:
                if at % spec.cadence == 0:
                    run_detector(client, spec, dt.datetime.fromtimestamp(at, dt.timezone.utc))
                    runs += 1
        segments = client.query(
            "SELECT uniqExact(model_name, model_version, model_stage, segment_dim, segment_value) "
            "FROM ml_segment_aggregates WHERE segment_dim != '__all__'"
        ).result_rows[0][0]
        columns = ", ".join(ALERT_COLUMNS)
        return Day(
            calls=calls,
            segments=segments,
            alerts=_rows(client, f"SELECT {columns} FROM ml_anomaly_events FINAL "
                                 "WHERE state = 'open' ORDER BY score DESC"),
            findings=_rows(client, f"SELECT {columns}, window_end FROM ml_anomalies FINAL"),
            runs=runs,
        )  # fmt: skip
    finally:
        client.close()


def _rows(client, sql: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


# The last half hour at every 5-minute boundary (persistence needs consecutive
# windows: an anomaly opens once found in 2 of the last 3).
LAST_HALF_HOUR = list(range(END - 1800, END + 1, 300))


@pytest.fixture(scope="module")
def faulted_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day]:
    yield _simulate(tmp_path_factory.mktemp("faulted"), faults=True, run_times=LAST_HALF_HOUR)


def _culprit(alert: dict[str, Any]) -> str:
    return f"{alert['segment_dim']}={alert['segment_value']}"


def test_the_day_is_big_enough(faulted_day: Day) -> None:
    assert faulted_day.calls > 2_000_000
    assert faulted_day.segments >= 500


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_each_fault_is_found_with_its_culprit_first(faulted_day: Day, fault: Fault) -> None:
    """Ranked by score among the detector's alerts on the fault's model and quantity;
    another fault's culprit may rank above (German confidence drops further than
    Japanese confidence sits low: both are named), nothing else may."""
    others = {(f.segment_dim, f.segment_value) for f in FAULTS if f.model == fault.model} - {
        (fault.segment_dim, fault.segment_value)
    }
    ranked = [
        a for a in faulted_day.alerts  # by score, highest first
        if (a["detector"], a["model_name"], a["model_stage"], a["quantity"])
        == (fault.detector, fault.model, fault.stage, fault.quantity)
        and (a["segment_dim"], a["segment_value"]) not in others
    ]  # fmt: skip
    assert ranked, f"{fault.name}: no {fault.detector} alert on {fault.model} {fault.quantity}"
    top = ranked[0]
    assert (top["segment_dim"], top["segment_value"]) == (fault.segment_dim, fault.segment_value), (
        f"{fault.name}: ranked first {_culprit(top)}, then {[_culprit(a) for a in ranked[1:4]]}"
    )
    # It explains itself and links to example traces.
    assert f"{fault.segment_dim}={fault.segment_value}" in top["details"]
    assert top["exemplar_trace_ids"]


def test_every_alert_of_the_faulted_day_comes_from_a_fault(faulted_day: Day) -> None:
    """Besides the faults' own alerts, only their echoes: the same faulted segment
    seen by another detector or quantity (BR's amounts in cents also raise its
    scores), or the whole model, whose mix a fault changes too."""
    faulted = {(f.model, f.segment_dim, f.segment_value) for f in FAULTS}
    for alert in faulted_day.alerts:
        dims = alert["segment_dim"].split("×")
        values = alert["segment_value"].split(" × ")
        echoes = any(
            (alert["model_name"], d, v) in faulted for d, v in zip(dims, values, strict=True)
        )
        assert echoes or alert["segment_dim"] == "__all__", f"unexplained: {alert['details']}"


# A day of 2 M calls and over 200 detector runs: about 3 minutes alone on the 2-core
# machine this was built on, close to the suite's 5-minute limit when other tests share it.
@pytest.mark.timeout(900)
def test_the_clean_day_raises_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No fault: no run finds anything, let alone opens an alert. The detectors run
    every hour of the day (each window against its baselines) and at every
    boundary of the last half hour."""
    hourly = list(range(START + 3600, END - 1800, 3600))
    run_times = hourly + LAST_HALF_HOUR
    day = _simulate(tmp_path_factory.mktemp("clean"), faults=False, run_times=run_times)
    assert day.segments >= 500
    assert day.runs > 200
    assert [f["details"] for f in day.findings] == []
    assert day.alerts == []
