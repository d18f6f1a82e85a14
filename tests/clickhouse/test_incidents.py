"""Anomalies that share a cause form one incident named by its root, with one alert."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import numpy as np
import pytest

from segwatch.clickhouse.incident_members import IncidentMember
from segwatch.clickhouse.incidents import _still_resolved, join_incidents, settle_incidents
from segwatch.clickhouse.lifecycle import EVENT_COLUMNS, Persistence, utc
from segwatch.clickhouse.queries import AnomalyFilter, list_anomalies

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)


def _opened(
    detector: str, dim: str, value: str, quantity: str, score: float, *, minutes: int = 0,
    threshold: float = 0.2, model: str = "fraud", means: tuple[float, float] = (0.2, 0.5),
) -> dict[str, Any]:  # fmt: skip
    end = T0 + dt.timedelta(minutes=minutes)
    return {
        "state": "open", "detector": detector, "model_name": model, "model_version": "1",
        "model_stage": "serving", "segment_dim": dim, "segment_value": value,
        "quantity": quantity, "window_start": end - dt.timedelta(minutes=15), "window_end": end,
        "baseline_start": end - dt.timedelta(minutes=75),
        "baseline_end": end - dt.timedelta(minutes=15),
        "score": score, "threshold": threshold, "p_value": 0.001, "support": 500,
        "baseline_value": means[0], "current_value": means[1],
        "exemplar_trace_ids": ["ab" * 16], "details": f"{quantity} moved for {dim}={value}",
        "statistics": {},
    }  # fmt: skip


def _resolved(opened: dict[str, Any], minutes: int) -> dict[str, Any]:
    end = T0 + dt.timedelta(minutes=minutes)
    return {**opened, "state": "resolved", "window_start": end - dt.timedelta(minutes=15),
            "window_end": end, "details": "resolved"}  # fmt: skip


def _incidents(client) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    return client.query(
        "SELECT incident_id, state, root_detector, root_segment_dim, root_segment_value, "
        "root_quantity, anomalies, open_anomalies, consequences FROM ml_incidents "
        "ORDER BY opened_at, incident_id"
    ).result_rows


def test_one_fault_seen_by_several_detectors_is_one_incident_named_by_its_input(client) -> None:  # type: ignore[no-untyped-def]
    country = "feature.country"
    # The score's drift and level shift open first; the feature's drift a window later.
    first = [
        _opened("psi_drift", country, "BR", "output.score", 4.6),
        _opened("metric_shift", country, "BR", "output.score", 9.0, threshold=4.0),
        _opened("psi_drift", "feature.device", "ios", "feature.amount", 0.4),  # another fault
    ]
    join_incidents(client, first)
    br = first[0]["incident_id"]
    assert first[1]["incident_id"] == br and first[2]["incident_id"] != br
    # One alert per incident: the transition that opened each one.
    assert [t["incident_alert"] for t in first] == [True, False, True]
    later = [_opened("psi_drift", country, "BR", "feature.amount", 4.5, minutes=5),
             _opened("data_range", country, "BR", "feature.amount", 0.03, minutes=5,
                     threshold=0.01)]  # fmt: skip
    join_incidents(client, later)
    assert {t["incident_id"] for t in later} == {br}
    assert [t["incident_alert"] for t in later] == [False, False]
    rows = {row[0]: row for row in _incidents(client)}
    assert len(rows) == 2
    # The root is the input, from the data-quality check, not the score that opened first.
    assert rows[br][2:6] == ("data_range", country, "BR", "feature.amount")
    assert rows[br][6:8] == (4, 4)
    assert "psi_drift: feature.amount for feature.country=BR" in rows[br][8]
    assert "metric_shift: output.score for feature.country=BR" in rows[br][8]
    reasons = client.query(
        "SELECT detector, quantity, role, reason FROM ml_incident_members FINAL "
        "WHERE incident_id = {i:String} ORDER BY detector, quantity",
        parameters={"i": br},
    ).result_rows
    roles = {(d, q): (role, reason) for d, q, role, reason in reasons}
    assert roles[("data_range", "feature.amount")] == ("root", "")
    role, reason = roles[("metric_shift", "output.score")]
    assert role == "consequence"
    assert reason == (
        "a consequence of feature.amount leaving its range for "
        "feature.country=BR (data_range): output.score rose there (metric_shift)"
    )
    # The summary says what is root and what follows from it.
    assert later[0]["incident_summary"] == (
        "feature.amount moved for feature.country=BR. As a consequence: feature.amount rose "
        "there (psi_drift); output.score rose there (metric_shift, psi_drift)"
    )


def test_a_missing_feature_and_its_mirror_are_one_incident(client) -> None:  # type: ignore[no-untyped-def]
    missing = _opened("data_missing", "feature.country", "BR", "feature.amount", 0.3,
                      threshold=0.1)  # fmt: skip
    mirror = _opened("psi_drift", "feature.amount", "MISSING", "feature.country", 2.1)
    join_incidents(client, [mirror])  # the mirror seen first
    join_incidents(client, [missing])
    assert mirror["incident_id"] == missing["incident_id"]
    assert (mirror["incident_alert"], missing["incident_alert"]) == (True, False)
    [row] = _incidents(client)
    assert row[2:6] == ("data_missing", "feature.country", "BR", "feature.amount")
    [(reason,)] = client.query(
        "SELECT reason FROM ml_incident_members FINAL WHERE role = 'consequence'"
    ).result_rows
    assert "seen from feature.amount" in reason


def test_an_incident_resolves_with_its_last_anomaly_and_alerts_once(client) -> None:  # type: ignore[no-untyped-def]
    root = _opened("psi_drift", "feature.country", "BR", "feature.amount", 4.5)
    echo = _opened("psi_drift", "feature.country", "BR", "output.score", 4.6)
    join_incidents(client, [root, echo])
    gone = _resolved(root, 20)
    settle_incidents(client, [gone])
    assert (gone["incident_id"], gone["incident_alert"]) == (root["incident_id"], False)
    assert _incidents(client)[0][1] == "open"
    last = _resolved(echo, 25)
    settle_incidents(client, [last])
    assert last["incident_alert"] is True
    [row] = _incidents(client)
    assert row[1] == "resolved" and row[7] == 0
    # The same segment later is a new fault: a new incident, a new alert.
    again = _opened("psi_drift", "feature.country", "BR", "feature.amount", 3.0, minutes=60)
    join_incidents(client, [again])
    assert again["incident_alert"] is True and again["incident_id"] != root["incident_id"]


def test_crosses_join_their_parent_segment_and_models_stay_apart(client) -> None:  # type: ignore[no-untyped-def]
    parent = _opened("psi_drift", "feature.country", "BR", "feature.amount", 4.5)
    cross = _opened("metric_shift", "feature.country×feature.device", "BR × ios",
                    "output.score", 8.0, threshold=4.0)  # fmt: skip
    other_model = _opened("psi_drift", "feature.country", "BR", "feature.amount", 4.5,
                          model="churn")  # fmt: skip
    join_incidents(client, [parent, cross, other_model])
    assert cross["incident_id"] == parent["incident_id"]
    assert other_model["incident_id"] != parent["incident_id"]
    assert [t["incident_alert"] for t in (parent, cross, other_model)] == [True, False, True]


def _record(client, transitions: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    """Write the transitions to ml_anomaly_events, as update_lifecycle does."""
    client.insert(
        "ml_anomaly_events",
        [[T0, *(t[c] for c in EVENT_COLUMNS)] for t in transitions],
        column_names=["recorded_at", *EVENT_COLUMNS],
    )


def test_anomalies_are_listed_by_incident_root_first_worst_first(client) -> None:  # type: ignore[no-untyped-def]
    mild = [_opened("psi_drift", "feature.device", "ios", "feature.amount", 0.3)]
    severe = [
        _opened("metric_shift", "feature.country", "BR", "output.score", 40.0, threshold=4.0),
        _opened("psi_drift", "feature.country", "BR", "feature.amount", 4.5),
        _opened("psi_drift", "__all__", "__all__", "feature.hour", 0.25),  # alone, mild
    ]
    for batch in (mild, severe):
        _record(client, batch)
        join_incidents(client, batch)
    listed = list_anomalies(client, AnomalyFilter())
    rows = [dict(zip(listed.columns, row, strict=True)) for row in listed.rows]
    assert [(r["role"], r["quantity"], r["segment_value"]) for r in rows] == [
        ("root", "feature.amount", "BR"),  # the worst incident (score 10x its threshold) first
        ("consequence", "output.score", "BR"),
        ("root", "feature.amount", "ios"),  # 1.5x, in a segment
        ("root", "feature.hour", "__all__"),  # 1.25x, the whole model
    ]
    assert rows[0]["incident"] == rows[1]["incident"] != rows[2]["incident"]
    assert rows[1]["details"].startswith(
        "a consequence of feature.amount rising for feature.country=BR (psi_drift): "
        "output.score rose there (metric_shift). "
    )
    assert rows[1]["details"].endswith("output.score moved for feature.country=BR")
    # A model without anomalies lists nothing; one the store has never seen is named.
    assert list_anomalies(client, AnomalyFilter(model="fraud", state="resolved")).rows == []
    with pytest.raises(ValueError, match="unknown model 'frauds': it has fraud"):
        list_anomalies(client, AnomalyFilter(model="frauds"))
    # A model with only a profile loaded (no traffic yet) is known.
    client.insert("ml_baseline_aggregates", [["training", "churn", "", "__all__", "__all__",
                                              "feature.x"]],
                  column_names=["baseline_name", "model_name", "model_version", "segment_dim",
                                "segment_value", "quantity"])  # fmt: skip
    assert list_anomalies(client, AnomalyFilter(model="churn")).rows == []
    # The limit counts incidents, each listed whole: one is the worst incident, root and
    # consequence; two adds the next incident, not a cut of one.
    for limit, expected in ((1, rows[:2]), (2, rows[:3])):
        limited = list_anomalies(client, AnomalyFilter(limit=limit))
        assert [dict(zip(limited.columns, row, strict=True)) for row in limited.rows] == expected


def _raw_calls(client, rows: list[tuple[str, float, float]], minutes: int) -> None:  # type: ignore[no-untyped-def]
    """Calls of fraud 1 in the 15 minutes before T0 + minutes: (country, amount, score)."""
    end = T0 + dt.timedelta(minutes=minutes)
    client.insert(
        "ml_model_calls",
        [[end - dt.timedelta(seconds=1 + i % 800), f"{i:032x}", f"{i:016x}", 1000, "fraud", "1",
          "serving", "predict", "", "svc",
          {"feature.amount": amount, "output.score": score}, {"feature.country": country}]
         for i, (country, amount, score) in enumerate(rows)],
        column_names=["timestamp", "trace_id", "span_id", "duration_ns", "model_name",
                      "model_version", "model_stage", "operation", "prediction_id",
                      "service_name", "numbers", "strings"],
    )  # fmt: skip


def test_a_shift_that_only_the_roots_calls_carry_is_its_consequence(client) -> None:  # type: ignore[no-untyped-def]
    """The score rose for country=BR; amounts in [100, 1000) are mostly BR's, so the score's
    level shifted there too. Recomputed from the raw calls without BR's, it is back to
    normal: a consequence of the BR incident. Where the score also rose for the others
    (amounts in [1000, 10000)), it is an incident of its own."""
    rng = np.random.default_rng(7)
    calls = [("BR", float(a), 0.2 + 0.5 + 0.01 * rng.standard_normal())
             for a in rng.uniform(100, 1000, 600)]  # fmt: skip
    calls += [
        ("US", float(a), 0.2 + 0.01 * rng.standard_normal()) for a in rng.uniform(100, 1000, 300)
    ]
    calls += [("US", float(a), 0.2 + 0.3 + 0.01 * rng.standard_normal())
              for a in rng.uniform(1000, 10000, 400)]  # fmt: skip
    _raw_calls(client, calls, minutes=5)
    root = _opened("psi_drift", "feature.country", "BR", "output.score", 3.0)
    join_incidents(client, [root])
    shift = {"median": 0.2, "scale": 0.01}
    decile = {**_opened("metric_shift", "feature.amount", "[100, 1000)", "output.score", 40.0,
                        minutes=5, threshold=4.0), "support": 900, "statistics": shift}  # fmt: skip
    other = {**_opened("metric_shift", "feature.amount", "[1000, 10000)", "output.score", 30.0,
                       minutes=5, threshold=4.0), "support": 400, "statistics": shift}  # fmt: skip
    join_incidents(client, [decile, other])
    assert decile["incident_id"] == root["incident_id"]
    assert decile["incident_role"] == "consequence" and decile["incident_alert"] is False
    assert other["incident_id"] != root["incident_id"] and other["incident_alert"] is True
    [(relation, reason)] = client.query(
        "SELECT relation, reason FROM ml_incident_members FINAL WHERE segment_value = '[100, 1000)'"
    ).result_rows
    assert relation == "explained"
    assert reason.startswith("explained by output.score for feature.country=BR (psi_drift): "
                             "without its 600 calls there, its 300 calls give mean ")  # fmt: skip
    assert "against the usual 0.2: robust z 0.0" in reason and reason.endswith(
        ", under 4 (with them 33.3)"
    )


def test_a_finding_the_raw_calls_do_not_hold_is_not_explained(client) -> None:  # type: ignore[no-untyped-def]
    """Raw calls off (or expired): nothing to recompute from, so no attaching by guess."""
    root = _opened("psi_drift", "feature.country", "BR", "output.score", 3.0)
    shift = {"median": 0.2, "scale": 0.01}
    decile = {**_opened("metric_shift", "feature.amount", "[100, 1000)", "output.score", 40.0,
                        minutes=5, threshold=4.0), "statistics": shift}  # fmt: skip
    join_incidents(client, [root])
    join_incidents(client, [decile])
    assert decile["incident_id"] != root["incident_id"] and decile["incident_alert"] is True


def test_a_later_fault_in_the_same_segment_is_an_incident_of_its_own(client) -> None:  # type: ignore[no-untyped-def]
    """An anomaly that stays open (new categories in a field that keeps getting new ones)
    must not swallow a fault in its segment hours later: a consequence would not alert."""
    lasting = _opened("data_categories", "feature.country", "BR", "feature.merchant", 0.05,
                      threshold=0.01)  # fmt: skip
    join_incidents(client, [lasting])
    later = _opened("psi_drift", "feature.country", "BR", "feature.amount", 4.0, minutes=180)
    join_incidents(client, [later])
    assert later["incident_id"] != lasting["incident_id"] and later["incident_alert"] is True
    soon = _opened("metric_shift", "feature.country", "BR", "output.score", 9.0, minutes=185,
                   threshold=4.0)  # fmt: skip
    join_incidents(client, [soon])  # within two hours of the latest: the same fault
    assert soon["incident_id"] == later["incident_id"] and soon["incident_alert"] is False


def test_a_replay_of_the_past_does_not_join_todays_incidents(client) -> None:  # type: ignore[no-untyped-def]
    today = _opened("psi_drift", "feature.country", "BR", "feature.amount", 4.0, minutes=24 * 60)
    join_incidents(client, [today])
    # a day earlier, as `segwatch detect --from` runs it
    replayed = _opened("metric_shift", "feature.country", "BR", "output.score", 9.0,
                       threshold=4.0)  # fmt: skip
    join_incidents(client, [replayed])
    assert replayed["incident_id"] != today["incident_id"] and replayed["incident_alert"] is True


def test_a_member_another_run_resolved_is_not_reopened_by_a_rewrite(client) -> None:  # type: ignore[no-untyped-def]
    """A run ranks an incident from what it read; meanwhile another collector's run resolved
    one of its members. The rewrite of that member keeps it resolved."""
    score = _opened("metric_shift", "feature.country", "BR", "output.score", 9.0, threshold=4.0)
    join_incidents(client, [score])
    settle_incidents(client, [_resolved(score, 10)])
    stale = IncidentMember.of_transition(score)
    stale = dataclasses.replace(stale, incident_id=score["incident_id"], role="root")
    rewritten = _still_resolved(client, [dataclasses.replace(stale, role="consequence")])
    assert [(m.role, m.state) for m in rewritten] == [("consequence", "resolved")]


def test_an_open_incident_is_listed_whole_when_its_root_resolved_first(client) -> None:  # type: ignore[no-untyped-def]
    root = _opened("data_range", "feature.country", "BR", "feature.amount", 0.03, threshold=0.01)
    echo = _opened("psi_drift", "feature.country", "BR", "output.score", 4.6)
    _record(client, [root, echo])
    join_incidents(client, [root, echo])
    gone = _resolved(root, 20)
    _record(client, [gone])
    settle_incidents(client, [gone])
    listed = list_anomalies(client, AnomalyFilter(state="open"))
    rows = [dict(zip(listed.columns, row, strict=True)) for row in listed.rows]
    assert [(r["role"], r["state"], r["detector"]) for r in rows] == [
        ("root", "resolved", "data_range"),  # the incident is open: its root is shown too
        ("consequence", "open", "psi_drift"),
    ]
    assert list_anomalies(client, AnomalyFilter(state="resolved")).rows == []


@pytest.mark.parametrize("grouped", [False, True], ids=["alone", "in a group"])
def test_an_anomaly_a_failed_run_left_without_incident_is_joined_and_alerted_late(
    client, recorder, monkeypatch, store_dsn, grouped
) -> None:  # type: ignore[no-untyped-def]
    """A run that recorded its anomalies (ml_anomaly_events) and failed before their
    incidents (the store went away) left them open with no incident and no alert; a rerun
    of the window does not open them again. The next window's run gives them their
    incident and returns them among its opened transitions, so their alert goes out late,
    once. The same when the runs are a scheduler's turns: a group beside another detector,
    on two sessions (its read of them on either, their join on the first)."""
    from counting_client import CountingClient
    from shop_traffic import END, ingest, traffic

    from segwatch.clickhouse import detection
    from segwatch.clickhouse.store import open_client, parse_dsn

    ingest(client, recorder, traffic(seed=3, color_weights_now=[0.2, 0.3, 0.5])[0])
    specs = {s.name: s for s in detection.load_manifest()}
    psi = dataclasses.replace(specs["psi_drift"], persistence=Persistence(found=1, windows=1))
    at = dt.datetime.fromtimestamp(END, dt.timezone.utc)
    helper = CountingClient(open_client(parse_dsn(store_dsn)))

    def run(moment: dt.datetime) -> detection.DetectorRun:
        if not grouped:
            return detection.run_detector(client, psi, moment)
        outcomes = detection.run_detector_group(client, [specs["volume"], psi], moment, [helper])
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        return outcomes[1]  # type: ignore[return-value]

    def store_gone(*_: object) -> None:
        raise ConnectionError("the store went away")

    with monkeypatch.context() as patched:
        patched.setattr(detection, "join_incidents", store_gone)
        try:
            run(at)
        except ConnectionError:
            pass
        else:
            raise AssertionError("the run did not fail")
    opened_events = client.query(
        "SELECT quantity FROM ml_anomaly_events FINAL WHERE state = 'open'"
    ).result_rows
    assert opened_events == [("feature.color",)]
    assert client.query("SELECT count() FROM ml_incident_members").result_rows == [(0,)]

    # A run of the same window (another may be between its events and its incidents)
    # leaves it; the next window's run repairs it; the one after has nothing left to do.
    for minutes in (0, 5, 10):
        ran = run(at + dt.timedelta(minutes=minutes))
        if minutes == 5:
            assert [t["quantity"] for t in ran.opened] == ["feature.color"]
            repaired = ran.opened[0]
            assert repaired["incident_role"] == "root" and repaired["incident_alert"] is True
            assert repaired["window_end"] == psi.windows(at)["window_end"]  # when it opened
            assert utc(repaired["found_window_end"]) == repaired["window_end"]
            assert "PSI" in repaired["details"]
        else:
            assert [t["quantity"] for t in ran.opened] == []
    members = client.query(
        "SELECT incident_id, quantity, role FROM ml_incident_members FINAL"
    ).result_rows
    assert [(m[1], m[2]) for m in members] == [("feature.color", "root")]
    assert members[0][0] == repaired["incident_id"]
    assert (helper.statements > 0) == grouped
    helper.close()
