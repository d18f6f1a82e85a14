"""examples/grafana/segwatch.json: every panel's and variable's SQL, run as Grafana sends it.

Grafana substitutes the dashboard's template variables, then the ClickHouse
datasource plugin (``grafana-clickhouse-datasource``) expands its macros and
sends the SQL to the server. :func:`grafana_sql` does both for the few forms
the dashboard uses, as Grafana and the plugin define them (the macros as in
the plugin's ``pkg/macros/macros.go``), and refuses any other ``$`` form, so
a panel cannot use a variable or macro this test does not expand. The SQL
then runs on the real engine, on the store ``segwatch demo`` fills (read
only), and once through ``segwatch serve``'s HTTP interface, which is what
the plugin speaks.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from demo_transitions import BR_DRIFT_TRANSITIONS

from segwatch.clickhouse.detection import load_manifest
from segwatch.clickhouse.queries import anomaly_states_sql
from segwatch.clickhouse.store import open_client, parse_dsn

DASHBOARD = Path(__file__).resolve().parents[1] / "examples" / "grafana" / "segwatch.json"
PLUGIN = "grafana-clickhouse-datasource"

VALUES: dict[str, list[str]] = {
    "model": ["fraud"],
    "version": ["2.3"],
    "dimension": ["feature.country"],
    "quantity": ["feature.amount"],
    "label": ["label.is_fraud"],
    "prediction": ["output.score"],
    "threshold": ["0.5"],
}
"""The variables' values: the demo's fraud model (version 2.3), segmented by country."""

TIME = "time"
NUMBER = "number"
TEXT = "text"

PANEL_COLUMNS: dict[str, dict[str, str]] = {
    "Incidents: one per fault, its root and what follows": {
        "state": TEXT, "opened_at": TIME, "resolved_at": TIME, "root": TEXT,
        "root_detector": TEXT, "version": TEXT, "severity": NUMBER, "anomalies": NUMBER,
        "consequences": TEXT, "details": TEXT,
    },
    "Anomalies: open first, then this range's findings": {
        "window_end": TIME, "state": TEXT, "detector": TEXT, "version": TEXT, "segment": TEXT,
        "quantity": TEXT, "score": NUMBER, "threshold": NUMBER, "support": NUMBER,
        "trace_id": TEXT, "details": TEXT,
    },
    "Drift heat map: PSI per segment × quantity": {
        "segment": TEXT, "quantity": TEXT, "psi": NUMBER,
    },
    "Volume per segment": {"time": TIME, "segment": TEXT, "calls": NUMBER},
    "Mean of $quantity per segment": {"time": TIME, "segment": TEXT, "mean": NUMBER},
    "Label performance per segment": {
        "segment": TEXT, "version": TEXT, "labelled_calls": NUMBER, "accuracy": NUMBER,
        "mean_absolute_error": NUMBER,
    },
}  # fmt: skip
"""Each panel's columns and what Grafana needs them to be: a time series panel reads a
DateTime column as its time and a text column as the series name (the plugin turns the long
rows into one series per segment)."""

LABELS = "Label performance per segment"
INCIDENTS = "Incidents: one per fault, its root and what follows"
ANOMALIES = "Anomalies: open first, then this range's findings"
HEAT_MAP = "Drift heat map: PSI per segment × quantity"


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def grafana_sql(
    sql: str,
    start: int,
    end: int,
    interval_s: int = 10,
    values: dict[str, list[str]] = VALUES,
) -> str:
    """``sql`` as the plugin sends it for the time range [start, end] (epoch seconds), the
    variables set to ``values``.

    Grafana first: ``${name:singlequote}`` is every selected value quoted with ``'`` (a
    ``'`` inside escaped as ``\\'``), comma-separated. Then the plugin's macros:
    ``$__timeFilter(col)`` is ``col >= toDateTime(start) AND col <= toDateTime(end)``,
    ``$__fromTime`` and ``$__toTime`` are ``toDateTime(...)``, ``$__interval_s`` the
    panel's interval in whole seconds (at least 1; Grafana gives a 3-hour range in a
    1000-pixel panel about 10 s).
    """

    def quoted(match: re.Match[str]) -> str:
        return ", ".join("'" + v.replace("'", "\\'") + "'" for v in values[match.group(1)])

    sql = re.sub(r"\$\{(\w+):singlequote\}", quoted, sql)
    sql = re.sub(
        r"\$__timeFilter\(\s*([\w.]+)\s*\)",
        lambda m: f"{m[1]} >= toDateTime({start}) AND {m[1]} <= toDateTime({end})",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({start})")
    sql = sql.replace("$__toTime", f"toDateTime({end})")
    sql = sql.replace("$__interval_s", str(max(interval_s, 1)))
    left = re.findall(r"\$\{?[\w]+[^\s]*", sql)
    assert not left, f"a variable or macro the test does not expand: {left}"
    return sql


def panel_sql(dashboard: dict[str, Any]) -> dict[str, str]:
    return {p["title"]: p["targets"][0]["rawSql"] for p in dashboard["panels"]}


def variable_sql(dashboard: dict[str, Any]) -> dict[str, str]:
    return {
        v["name"]: v["query"]["rawSql"]
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    }


def kind(type_name: str) -> str:
    """What Grafana makes of a ClickHouse type: a time, a number or text."""
    inner = re.sub(r"^(Nullable|LowCardinality)\((.*)\)$", r"\2", type_name)
    inner = re.sub(r"^(Nullable|LowCardinality)\((.*)\)$", r"\2", inner)
    if inner.startswith("DateTime"):
        return TIME
    if re.match(r"^(U?Int\d+|Float\d+|Decimal)", inner):
        return NUMBER
    if inner in ("String",) or inner.startswith("FixedString"):
        return TEXT
    return inner


@contextmanager
def reader(directory: Path) -> Iterator[Client]:
    """The store in ``directory``; every query under ``readonly=1``; closed after."""
    client = open_client(parse_dsn(f"chdb://{directory}"))
    try:
        yield client
    finally:
        client.close()


def run(client: Client, sql: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(column name → kind, rows as dicts) of ``sql`` run read-only.

    The embedded engine names no columns for an empty result: then ``DESCRIBE`` gives them
    (a server names them; Grafana needs them only when there are rows)."""
    result = client.query(sql, settings={"readonly": 1})
    kinds = {n: kind(t.name) for n, t in zip(result.column_names, result.column_types, strict=True)}
    if not result.column_names:
        described = client.query(f"DESCRIBE TABLE ({sql})", settings={"readonly": 1})
        kinds = {str(row[0]): kind(str(row[1])) for row in described.result_rows}
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    return kinds, rows


def time_range() -> tuple[int, int]:
    """The dashboard's default range, the last 3 hours: the demo's 75 minutes end at most
    a few minutes before the test."""
    end = int(time.time())
    return end - 3 * 3600, end


def test_the_dashboard_is_a_clickhouse_datasource_dashboard_with_its_variables() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == PLUGIN
    for name in ("model", "version", "dimension", "quantity", "label", "prediction"):
        variable = variables[name]
        assert variable["type"] == "query", name
        assert variable["datasource"] == {"type": PLUGIN, "uid": "${datasource}"}, name
        assert variable["query"]["editorType"] == "sql", name
        assert "FROM ml_" in variable["query"]["rawSql"], name
    assert variables["version"]["multi"] and variables["version"]["includeAll"]
    assert variables["threshold"]["type"] == "textbox"

    panels = dashboard["panels"]
    assert sorted(p["title"] for p in panels) == sorted(PANEL_COLUMNS)
    for panel in panels:
        assert panel["datasource"] == {"type": PLUGIN, "uid": "${datasource}"}, panel["title"]
        (target,) = panel["targets"]
        assert target["datasource"]["type"] == PLUGIN
        assert target["editorType"] == "sql" and target["rawSql"].strip(), panel["title"]
        # the plugin's formats (grafana-plugin-sdk-go sqlutil): 0 time series, 1 table
        expected = (0, "timeseries") if panel["type"] == "timeseries" else (1, "table")
        assert (target["format"], target["queryType"]) == expected, panel["title"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))


def test_the_trace_id_column_links_to_the_trace_in_explore() -> None:
    (anomalies,) = [p for p in load_dashboard()["panels"] if p["title"] == ANOMALIES]
    (override,) = [
        o for o in anomalies["fieldConfig"]["overrides"] if o["matcher"]["options"] == "trace_id"
    ]
    (links,) = [p["value"] for p in override["properties"] if p["id"] == "links"]
    (link,) = links
    assert link["url"].startswith("/explore?")
    panes = json.loads(unquote(parse_qs(urlsplit(link["url"]).query)["panes"][0]))
    (query,) = panes["trace"]["queries"]
    assert query["datasource"] == {"type": PLUGIN, "uid": "${datasource}"}
    assert query["queryType"] == "traces"
    options = query["builderOptions"]
    assert options["table"] == "otel_traces"
    assert options["meta"]["traceId"] == "${__value.raw}"
    assert options["meta"]["isTraceSearchMode"] is False


def check_columns(title: str, kinds: dict[str, str]) -> None:
    assert kinds == PANEL_COLUMNS[title], title


def test_every_variable_and_panel_runs_on_the_demo_store(demo_store: Path) -> None:
    dashboard = load_dashboard()
    start, end = time_range()
    with reader(demo_store) as client:
        for name, sql in variable_sql(dashboard).items():
            kinds, rows = run(client, grafana_sql(sql, start, end))
            assert len(kinds) == 1 and list(kinds.values()) == [TEXT], name
            values = [next(iter(row.values())) for row in rows]
            if name == "label":
                assert values == []  # the demo sends no labels: checked on a copy below
            else:
                assert set(VALUES[name]) <= set(values), (name, values)
        results = {}
        for title, sql in panel_sql(dashboard).items():
            kinds, rows = run(client, grafana_sql(sql, start, end))
            check_columns(title, kinds)
            results[title] = rows
        fraud_calls = client.query(
            "SELECT count() FROM ml_model_calls WHERE model_name = 'fraud'"
        ).result_rows[0][0]
        (state,) = client.query(STATE_OF_THE_DRIFT).result_rows[0]

    assert results[LABELS] == []  # no labels in the demo: see the test below
    # the demo's one fault is one incident, named at its root
    incidents = [(r["state"], r["root"], r["anomalies"]) for r in results[INCIDENTS]]
    assert incidents == [("open", "feature.amount for feature.country=BR", 3)], incidents
    found = [(r["detector"], r["segment"], r["quantity"], r["state"]) for r in results[ANOMALIES]]
    # open if the demo's runs opened it (found in enough windows), else found
    assert ("psi_drift", "feature.country=BR", "feature.amount", state or "found") in found
    assert all(r["trace_id"] for r in results[ANOMALIES])

    heat = results[HEAT_MAP]
    worst = max(heat, key=lambda r: r["psi"])
    assert worst["segment"] == "BR" and worst["quantity"] in ("feature.amount", "output.score")
    others = [r["psi"] for r in heat if r["segment"] != "BR"]
    assert len(others) >= 5 * 3 and max(others) < 0.25  # every segment × quantity has a cell

    volume = results["Volume per segment"]
    # one quantity's calls per segment, not the sum over the segment's four quantities
    assert sum(r["calls"] for r in volume) == fraud_calls
    trend = results["Mean of $quantity per segment"]
    assert {r["segment"] for r in trend} >= {"BR", "US", "DE"}
    last = max(r["time"] for r in trend)
    late_br = [r["mean"] for r in trend if r["segment"] == "BR" and r["time"] == last]
    late_us = [r["mean"] for r in trend if r["segment"] == "US" and r["time"] == last]
    assert late_br[0] > 3 * late_us[0]  # the demo's eightfold amounts in BR


HEAT_MAP_CONSTANTS = re.compile(
    r"WITH (\d+) AS cadence_s, (\d+) AS window_s, (\d+) AS baseline_s, (\d+) AS bins,"
)


def test_the_heat_maps_window_bins_and_colours_are_psi_drifts() -> None:
    """The heat map's cadence, window, baseline and bins are psi_drift's in the manifest,
    and its red starts at the detector's threshold."""
    (spec,) = [s for s in load_manifest() if s.name == "psi_drift"]
    dashboard = load_dashboard()
    found = HEAT_MAP_CONSTANTS.search(panel_sql(dashboard)[HEAT_MAP])
    assert found, "the heat map's query does not start with psi_drift's constants"
    assert tuple(int(n) for n in found.groups()) == (
        spec.cadence,
        spec.window,
        spec.baseline,
        spec.parameters["bins"],
    )
    (panel,) = [p for p in dashboard["panels"] if p["title"] == HEAT_MAP]
    red = panel["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]
    assert red == {"color": "red", "value": spec.parameters["threshold"]}


LAST_PSI_DRIFT_WINDOW = """
SELECT segment_value, quantity, score FROM ml_anomalies FINAL
WHERE detector = 'psi_drift' AND model_name = 'fraud' AND segment_dim = 'feature.country'
  AND window_end = (SELECT max(window_end) FROM ml_anomalies WHERE detector = 'psi_drift')
"""


def test_the_heat_map_shows_psi_drifts_scores(demo_store: Path) -> None:
    """Every psi_drift finding of the demo's last window (country=BR: amounts and scores) is
    its heat-map cell: the same window, baseline, bins and PSI."""
    start, end = time_range()
    with reader(demo_store) as client:
        _, cells = run(client, grafana_sql(panel_sql(load_dashboard())[HEAT_MAP], start, end))
        findings = client.query(LAST_PSI_DRIFT_WINDOW).result_rows
    psi = {(r["segment"], r["quantity"]): r["psi"] for r in cells}
    assert ("BR", "feature.amount") in {(segment, quantity) for segment, quantity, _ in findings}
    for segment, quantity, score in findings:
        assert psi[(segment, quantity)] == pytest.approx(score, rel=1e-6), (segment, quantity)


SECOND_VERSION = """
INSERT INTO ml_segment_aggregates
SELECT * REPLACE ('2.4' AS model_version, bucket_start + INTERVAL 30 MINUTE AS bucket_start)
FROM ml_segment_aggregates
WHERE model_name = 'fraud' AND bucket_start < (
    SELECT min(bucket_start) + INTERVAL 45 MINUTE FROM ml_segment_aggregates
    WHERE model_name = 'fraud')
"""
"""Version 2.4: fraud's first 45 minutes (before the drift) again, 30 minutes later: it ends
with the demo, without the drift."""


def test_the_heat_map_scores_each_version_on_its_own(demo_store: Path, tmp_path: Path) -> None:
    """psi_drift scores each version (and stage) on bins of its own; with two versions
    selected the heat map does too, a row per version's segment, and 2.3's cells are
    those it shows alone."""
    copy = tmp_path / "store"
    shutil.copytree(demo_store, copy, symlinks=True)  # the store links its tables relatively
    sql = panel_sql(load_dashboard())[HEAT_MAP]
    start, end = time_range()
    with reader(copy) as client:
        client.command(SECOND_VERSION)
        _, alone = run(client, grafana_sql(sql, start, end))
        _, both = run(
            client, grafana_sql(sql, start, end, values={**VALUES, "version": ["2.3", "2.4"]})
        )
    only = {(r["segment"], r["quantity"]): r["psi"] for r in alone}
    cells = {(r["segment"], r["quantity"]): r["psi"] for r in both}
    countries = {segment for segment, _ in only}
    assert {segment for segment, _ in cells} == {
        f"{country} ({version} serving)" for country in countries for version in ("2.3", "2.4")
    }
    for (segment, quantity), psi in only.items():
        assert cells[(f"{segment} (2.3 serving)", quantity)] == pytest.approx(psi, rel=1e-9)
    assert only[("BR", "feature.amount")] > 1
    assert cells[("BR (2.4 serving)", "feature.amount")] < 0.2


STATE_OF_THE_DRIFT = """
SELECT argMax(state, window_end) FROM ml_anomaly_events FINAL
WHERE detector = 'psi_drift' AND segment_value = 'BR' AND quantity = 'feature.amount'
"""

LIFECYCLE_STATES = f"""
SELECT detector, model_version, concat(segment_dim, '=', segment_value), quantity, current_state
FROM ({anomaly_states_sql()})
"""
"""Each anomaly's state as ``segwatch anomalies`` and ``segwatch_open_anomalies`` read it."""

LABEL_ROWS = """
INSERT INTO ml_labels
    (timestamp, model_name, prediction_id, numbers, strings, trace_id, service_name)
SELECT timestamp + INTERVAL 1 HOUR, model_name, prediction_id, map(),
       -- the truth: what a 0.5 threshold on the score predicts, wrong for one call in five
       map('label.is_fraud', if(xor(numbers['output.score'] >= 0.5,
                                    cityHash64(prediction_id, 'wrong') % 5 = 0), 'true', 'false')),
       '', 'payments'
FROM ml_model_calls
WHERE model_name = 'fraud' AND prediction_id != '' AND cityHash64(prediction_id) % 10 = 0
"""


def test_labels_and_an_open_anomaly_on_a_copy_of_the_demo_store(
    demo_store: Path, tmp_path: Path
) -> None:
    """The demo sends no labels: a copy gets labels for a tenth of the fraud predictions (one
    in five wrong), so the label panel and variable show rows; and a later transition of two
    of the demo's findings, so the anomalies panel shows open and resolved states."""
    copy = tmp_path / "store"
    shutil.copytree(demo_store, copy, symlinks=True)  # the store links its tables relatively
    dashboard = load_dashboard()
    start, end = time_range()
    with reader(copy) as client:
        client.command(LABEL_ROWS)
        client.command(BR_DRIFT_TRANSITIONS)
        _, labels = run(client, grafana_sql(variable_sql(dashboard)["label"], start, end))
        kinds, performance = run(client, grafana_sql(panel_sql(dashboard)[LABELS], start, end))
        _, anomalies = run(client, grafana_sql(panel_sql(dashboard)[ANOMALIES], start, end))
        lifecycle = {
            tuple(row[:4]): row[4]
            for row in client.query(LIFECYCLE_STATES, parameters={"model": "fraud"}).result_rows
        }
    assert labels == [{"label": "label.is_fraud"}]
    check_columns(LABELS, kinds)
    assert {r["segment"] for r in performance} >= {"BR", "US", "DE"}
    assert {r["version"] for r in performance} == {"2.3"}
    calls = sum(r["labelled_calls"] for r in performance)
    accuracy = sum(r["accuracy"] * r["labelled_calls"] for r in performance) / calls
    assert calls > 1000 and 0.72 < accuracy < 0.88  # 80 % right by construction
    states = {(r["detector"], r["quantity"]): r["state"] for r in anomalies}
    assert states[("psi_drift", "feature.amount")] == "open"
    assert states[("psi_drift", "output.score")] == "resolved"
    assert anomalies[0]["state"] == "open"  # open ones first
    # the panel's states are those segwatch anomalies and the open-anomalies gauge read
    for row in anomalies:
        key = (row["detector"], row["version"], row["segment"], row["quantity"])
        assert row["state"] == lifecycle.get(key, "found"), key


def test_grafana_over_segwatch_serve_gets_what_the_engine_gives(
    demo_store: Path, tmp_path: Path
) -> None:
    """Two panels through ``segwatch serve``'s HTTP interface (what the plugin speaks with
    ``protocol: http``), with clickhouse-connect as the client, answer as the engine does."""
    from segwatch.collector.config.collector_config import CollectorConfig
    from segwatch.collector.config.serve import ServeConfig
    from segwatch.collector.config.storage import StorageConfig
    from segwatch.collector.service.serving import StoreServer

    dashboard = load_dashboard()
    start, end = time_range()
    titles = [ANOMALIES, "Volume per segment"]
    queries = [grafana_sql(panel_sql(dashboard)[t], start, end) for t in titles]
    with reader(demo_store) as client:
        direct = [run(client, q) for q in queries]

    copy = tmp_path / "store"
    shutil.copytree(demo_store, copy, symlinks=True)  # the store links its tables relatively
    server = StoreServer(CollectorConfig(
        storage=StorageConfig(dsn=f"chdb://{copy}"),
        serve=ServeConfig(endpoint="127.0.0.1:0"),
    ))  # fmt: skip
    server.start()
    try:
        assert server.door is not None
        http = clickhouse_connect.get_client(
            host="127.0.0.1", port=server.door.port, database="segwatch"
        )
        try:
            served = [run(http, q) for q in queries]
        finally:
            http.close()
    finally:
        server.stop()
    for title, (kinds, rows), (served_kinds, served_rows) in zip(
        titles, direct, served, strict=True
    ):
        assert served_kinds == kinds == PANEL_COLUMNS[title]
        assert rows and served_rows == rows, title


@pytest.mark.parametrize(
    ("sql", "expanded"),
    [
        ("WHERE $__timeFilter(t)", "WHERE t >= toDateTime(100) AND t <= toDateTime(200)"),
        ("$__fromTime, $__toTime", "toDateTime(100), toDateTime(200)"),
        ("INTERVAL $__interval_s SECOND", "INTERVAL 10 SECOND"),
        ("m = ${model:singlequote}", "m = 'fraud'"),
    ],
)
def test_the_expansion_is_the_plugins(sql: str, expanded: str) -> None:
    assert grafana_sql(sql, 100, 200) == expanded


def test_an_unknown_variable_form_is_refused() -> None:
    with pytest.raises(AssertionError, match="does not expand"):
        grafana_sql("WHERE m = $model", 100, 200)
