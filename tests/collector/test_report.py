"""segwatch report and GET /report: what the page reads from the demo's store, the command's
exit codes, and the API route's auth and errors. (The page in a real browser:
test_report_browser.py.)"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from read_limit import THREE_DAYS, ReadLimit
from shop_traffic import END
from waiting import wait_until

from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.report import ReportRequest, UnknownModelError, client_query
from segwatch.collector.report.data import Report, read_report
from segwatch.collector.report.page_style import RENDER_SCRIPT
from segwatch.collector.report.reads import rows
from segwatch.collector.report.request import DriftSettings

pytest.importorskip("plotly", reason="the report needs the extra segwatch[report]")
from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

HOSTILE = '<!--<script>"<b>&amp;BR</b>'
"""A country as any service may send one: it opens an HTML comment inside a script
element, and holds Plotly's markup (<b>) and an entity (&amp;)."""

EXTRA_FINDINGS = 60
"""Findings added to the hostile store, of segments S0..S59 (no aggregates behind them)."""

FRAUD_LABELS = "fraud\tlabel.is_fraud\tclassification\t\toutput.score\ttrue\t0.5"
"""The performance detector's line for a fraud label graded by the score (labels_parameter)."""


def _read(store: Path, request: ReportRequest, labels: str = "") -> Report:
    client = open_client(parse_dsn(f"chdb://{store}"))
    try:
        return read_report(client_query(client), request, DriftSettings.of(), labels)
    finally:
        client.close()


@pytest.fixture(scope="module")
def fraud(demo_store: Path) -> Report:
    return _read(demo_store, ReportRequest(model="fraud"))


def make_hostile_store(demo_store: Path, directory: Path) -> Path:
    """A copy of the demo's store with a country named :data:`HOSTILE` (MX's calls again,
    its psi_drift finding the BR amount's, scored highest), and :data:`EXTRA_FINDINGS` more
    findings in the latest window, of segments with no calls: more than a page draws."""
    store = directory / "store"
    shutil.copytree(demo_store, store, symlinks=True)  # the store links its tables relatively
    client = open_client(parse_dsn(f"chdb://{store}"))
    latest_br_amount = (  # a subquery: REPLACE's names would shadow the columns in WHERE
        "SELECT * FROM ml_anomalies FINAL WHERE detector = 'psi_drift' AND segment_value = 'BR' "
        "AND quantity = 'feature.amount' ORDER BY window_end DESC LIMIT 1"
    )
    try:
        client.command(
            "INSERT INTO ml_segment_aggregates SELECT * REPLACE ({v:String} AS segment_value) "
            "FROM (SELECT * FROM ml_segment_aggregates "
            "WHERE segment_dim = 'feature.country' AND segment_value = 'MX')",
            parameters={"v": HOSTILE},
        )
        client.command(
            "INSERT INTO ml_anomalies SELECT * REPLACE ({v:String} AS segment_value, 99. AS score, "
            "concat('feature.amount drifted for feature.country=', {v:String}) AS details) "
            f"FROM ({latest_br_amount})",
            parameters={"v": HOSTILE},
        )
        client.command(
            "INSERT INTO ml_anomalies SELECT * REPLACE (0.5 AS score, "
            f"concat('S', toString(arrayJoin(range({EXTRA_FINDINGS})))) AS segment_value) "
            f"FROM ({latest_br_amount})"
        )
    finally:
        client.close()
    return store


@pytest.fixture(scope="module")
def hostile_store(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hostile_store(demo_store, tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def hostile(hostile_store: Path) -> tuple[Report, str, int]:
    """The hostile store's fraud report, its page, and how many findings its period has."""
    from segwatch.collector.report import render_page

    client = open_client(parse_dsn(f"chdb://{hostile_store}"))
    try:
        report = read_report(client_query(client), ReportRequest(model="fraud"))
        (total,) = client.query(
            "SELECT count() FROM ml_anomalies FINAL WHERE model_name = 'fraud' "
            "AND window_end >= now() - INTERVAL 1 DAY"
        ).result_rows[0]
    finally:
        client.close()
    return report, render_page(report), int(total)


def figures_of(page: str) -> dict[str, Any]:
    """The page's figures, by plot id, from the JSON its drawing script reads."""
    match = re.search(r'<script id="sw-figures" type="application/json">(.*?)</script>', page, re.S)
    assert match, "no figures' JSON in the page"
    figures: dict[str, Any] = json.loads(match.group(1))
    return figures


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _psi_finding(report: Report) -> dict[str, Any]:
    """psi_drift's finding of BR amounts in the heat map's window (the latest)."""
    (grid,) = report.models[0].grids
    (finding,) = [
        f
        for f in report.models[0].findings
        if f["detector"] == "psi_drift"
        and f["segment_value"] == "BR"
        and f["quantity"] == "feature.amount"
        and f["window_end"].replace(tzinfo=grid.window_end.tzinfo) == grid.window_end
    ]
    return finding


def test_the_br_amount_psi_is_the_detectors_and_the_largest_of_its_column(fraud: Report) -> None:
    (model,) = fraud.models
    (grid,) = model.grids
    column = {c.segment: c.psi for c in grid.cells if c.quantity == "feature.amount"}
    assert max(column, key=lambda s: column[s]) == "feature.country=BR"
    # The same bins and formula as psi_drift: the heat map's cell is the detector's score.
    assert column["feature.country=BR"] == pytest.approx(_psi_finding(fraud)["score"], rel=1e-6)
    others = [
        psi
        for segment, psi in column.items()
        if segment.startswith("feature.country=") and segment != "feature.country=BR"
    ]
    assert column["feature.country=BR"] > 10 * max(others)


def test_anomalies_are_grouped_by_incident_root_first(fraud: Report) -> None:
    """The demo's one fault: one open incident, its root (the amount out of range in BR)
    first, the two drifts it explains after it, each saying why."""
    (model,) = fraud.models
    opened = [a for a in model.anomalies if a["state"] == "open"]
    assert model.open_incidents == 1 and len({a["incident"] for a in opened}) == 1
    assert (opened[0]["role"], opened[0]["detector"]) == ("root", "data_range")
    assert [a["role"] for a in opened[1:]] == ["consequence", "consequence"]
    assert all(a["reason"].startswith("a consequence of feature.amount") for a in opened[1:])
    from segwatch.collector.report import render_page

    page = render_page(fraud)
    assert "<b>1</b><span>open incidents</span>" in page and "└ consequence" in page


def test_the_br_amount_distribution_moved_as_injected(fraud: Report) -> None:
    """The demo multiplies BR amounts by 8 in the window: the histograms say so."""
    (focus,) = [
        f
        for f in fraud.models[0].focus
        if f.finding["segment_value"] == "BR" and f.finding["quantity"] == "feature.amount"
    ]
    distribution = focus.distribution
    assert distribution is not None and distribution.numeric
    mean_ratio = distribution.current.mean() / distribution.baseline.mean()
    median_ratio = distribution.current.quantile(0.5) / distribution.baseline.quantile(0.5)
    assert 6 < mean_ratio < 10 and 6 < median_ratio < 10
    bins = distribution.bins()
    assert bins.log_scale and sum(bins.baseline) == pytest.approx(1)
    # Most of the window's mass lies above the baseline's 90th percentile.
    high = distribution.baseline.quantile(0.9)
    above = sum(s for c, s in zip(bins.centers, bins.current, strict=True) if c > high)
    assert above > 0.5
    # The time series: the segment's mean jumps in the finding's window.
    series = focus.series
    inside = [
        m
        for t, m in zip(series.times, series.means, strict=True)
        if t >= focus.finding["window_start"].replace(tzinfo=t.tzinfo)
    ]
    before = [m for m in series.means[: len(series.means) - len(inside)] if math.isfinite(m)]
    assert min(inside) > 4 * max(before)


def test_the_heat_map_holds_every_segment_missing_and_other_included(
    demo_store: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(demo_store, store, symlinks=True)  # the store links its tables relatively
    client = open_client(parse_dsn(f"chdb://{store}"))
    try:  # countries beyond the top K fold into __other__: give the store such a segment
        client.command(
            "INSERT INTO ml_segment_aggregates SELECT * REPLACE ('__other__' AS segment_value) "
            "FROM (SELECT * FROM ml_segment_aggregates WHERE segment_dim = 'feature.country' "
            "AND segment_value = 'MX')"
        )
        report = read_report(client_query(client), ReportRequest(model="fraud"))
        (grid,) = report.models[0].grids
        stored = client.query(
            "SELECT DISTINCT segment_dim, segment_value FROM ml_segment_aggregates "
            "WHERE model_name = 'fraud' AND bucket_start >= {start:DateTime('UTC')} "
            "AND bucket_start < {end:DateTime('UTC')}",
            parameters={
                "start": grid.baseline_start.strftime("%Y-%m-%d %H:%M:%S"),
                "end": grid.window_end.strftime("%Y-%m-%d %H:%M:%S"),
            },
        ).result_rows
    finally:
        client.close()
    expected = {"__all__" if d == "__all__" else f"{d}={v}" for d, v in stored}
    assert set(grid.segments) == expected
    assert {"feature.account_age_days=MISSING", "feature.country=__other__"} <= expected
    assert {c.quantity for c in grid.cells} == {
        "feature.account_age_days",
        "feature.amount",
        "feature.country",
        "feature.device",
        "output.score",
    }


def test_an_unknown_model_is_an_error_naming_the_models(demo_store: Path) -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'nope': it has fraud, sentiment"):
        _read(demo_store, ReportRequest(model="nope"))


def test_performance_from_labels(demo_store: Path, tmp_path: Path) -> None:
    """Labels of the fraud calls, graded as the config's label says: accuracy per interval
    is the share of labelled calls whose score predicted the truth."""
    store = tmp_path / "store"
    shutil.copytree(demo_store, store, symlinks=True)  # the store links its tables relatively
    client = open_client(parse_dsn(f"chdb://{store}"))
    try:
        client.command(
            "INSERT INTO ml_labels (timestamp, model_name, prediction_id, strings) "
            "SELECT timestamp, model_name, prediction_id, map('label.is_fraud', 'true') "
            "FROM ml_model_calls WHERE model_name = 'fraud' AND cityHash64(prediction_id) % 3 = 0"
        )
        expected = client.query(
            "SELECT count(), avg(numbers['output.score'] >= 0.5) FROM ml_model_calls "
            "WHERE model_name = 'fraud' AND cityHash64(prediction_id) % 3 = 0"
        ).result_rows[0]
        report = read_report(
            client_query(client), ReportRequest(model="fraud"), labels=FRAUD_LABELS
        )
    finally:
        client.close()
    rows = report.models[0].performance
    labelled = sum(r["labelled"] for r in rows)
    assert labelled == expected[0] > 1000
    accuracy = sum(r["value"] * r["labelled"] for r in rows) / labelled
    assert accuracy == pytest.approx(expected[1])
    assert {r["label_name"] for r in rows} == {"label.is_fraud"}


def test_store_strings_are_escaped_in_the_page(hostile: tuple[Report, str, int]) -> None:
    """A value is text everywhere: HTML-escaped in the page, never raw in the figures' JSON
    (no "<", ">" or "&" at all there), and escaped as Plotly's markup in what Plotly draws."""
    report, page, _ = hostile
    label = f"feature.country={HOSTILE}"
    assert HOSTILE not in page
    assert f'<span class="segment">{html.escape(label)}</span>' in page  # tables, findings
    block = page.split('<script id="sw-figures" type="application/json">')[1].split("</script")[0]
    assert not {"<", ">", "&"} & set(block)
    figures = figures_of(page)
    drawn = [
        text
        for f in figures.values()
        for text in _strings({**f, "layout": {**f["layout"], "meta": None}})
    ]  # everything but the meta the tests read
    assert not [text for text in drawn if HOSTILE in text]
    escaped = html.escape(label, quote=False)
    (heatmap,) = [f for f in figures.values() if f["layout"]["meta"]["kind"] == "heatmap"]
    assert escaped in heatmap["data"][0]["y"]
    assert f"<b>{escaped}</b>" in heatmap["layout"]["yaxis"]["ticktext"]  # framed: a finding
    assert f"{label}|feature.amount" in heatmap["layout"]["meta"]["highlighted"]
    hover = [h for row in heatmap["data"][0]["customdata"] for h in row if escaped in h]
    assert any("drifted for" in h and h.count(escaped) == 2 for h in hover)  # + the sentence
    (distribution,) = [
        f
        for f in figures.values()
        if f["layout"]["meta"]
        == {"kind": "distribution", "segment": label, "quantity": "feature.amount"}
    ]
    assert distribution["layout"]["title"]["text"] == (
        f"feature.amount in {escaped}: window against baseline"
    )
    assert report.models[0].focus[0].finding["segment_value"] in ("BR", HOSTILE)


def test_every_finding_is_drawn_or_named_and_the_totals_are_counted(
    hostile: tuple[Report, str, int],
) -> None:
    """Past MAX_FOCUS the page names what it does not draw; the tables' totals are the
    period's, not what a LIMIT kept."""
    from segwatch.collector.report.focus import MAX_FOCUS

    report, page, total = hostile
    (model,) = report.models
    keys = {(f["segment_dim"], f["segment_value"], f["quantity"]) for f in model.latest_findings}
    drawn = [
        (f.finding["segment_dim"], f.finding["segment_value"], f.finding["quantity"])
        for f in model.focus
    ]
    left_out = [(f["segment_dim"], f["segment_value"], f["quantity"]) for f in model.left_out]
    assert len(drawn) == MAX_FOCUS and len(keys) > MAX_FOCUS + 20
    assert sorted(drawn + left_out) == sorted(keys)  # each once, drawn or named
    # Open anomalies first, then the latest (the hostile finding scores highest).
    open_keys = {
        (a["segment_dim"], a["segment_value"], a["quantity"])
        for a in model.anomalies
        if a["state"] == "open"
    }
    assert open_keys and set(drawn[: len(open_keys)]) == open_keys
    assert drawn[len(open_keys)] == ("feature.country", HOSTILE, "feature.amount")
    assert f"{len(left_out)} more segments and quantities with findings are not drawn" in page
    for dim, value, quantity in left_out:
        assert f"{dim}={value}</span> · {quantity}" in page
    assert total > EXTRA_FINDINGS > 50  # more than the table shows
    assert (len(model.findings), model.findings_total) == (50, total)
    assert f"Latest detector findings (the latest 50 of {total})" in page
    assert f"<b>{total}</b><span>findings</span>" in page
    opened = sum(a["state"] == "open" for a in model.anomalies)
    assert model.open_anomalies == opened == model.anomalies_total >= len(open_keys)
    assert f"<b>{opened}</b><span>open anomalies</span>" in page


def test_a_finding_on_the_whole_model_has_its_time_series(fraud: Report, demo_store: Path) -> None:
    """The whole model's rows are the finding's own series; drawn once, not twice."""
    from segwatch.collector.report.figures import series_figure
    from segwatch.collector.report.focus import read_focus

    (model,) = fraud.models
    finding = {**_psi_finding(fraud), "segment_dim": "__all__", "segment_value": "__all__"}
    start, end = model.first_minute, model.last_minute + dt.timedelta(minutes=1)
    client = open_client(parse_dsn(f"chdb://{demo_store}"))
    try:
        focus = read_focus(client_query(client), "fraud", finding, start, end, model.step)
    finally:
        client.close()
    series = focus.series
    assert len(series.times) >= 75 * 60 // model.step
    assert series.times == series.model_times and series.means == series.model_means
    assert all(math.isfinite(m) for m in series.means)
    figure = series_figure(focus)
    assert figure is not None and [t.name for t in figure.data] == ["__all__"]


def test_the_focus_is_open_anomalies_first_then_the_latest_and_says_what_it_left() -> None:
    from segwatch.collector.report.focus import choose_focus

    def row(value: str, quantity: str, **extra: Any) -> dict[str, Any]:
        key = {"model_version": "1", "model_stage": "serving", "segment_dim": "d"}
        return {**key, "segment_value": value, "quantity": quantity, **extra}

    findings = [  # latest first, two detectors on (a, q)
        row("a", "q", detector="psi_drift"),
        row("a", "q", detector="data_range"),
        row("b", "q", detector="psi_drift"),
        row("c", "q", detector="psi_drift"),
    ]
    anomalies = [row("c", "q", state="open"), row("b", "q", state="resolved")]
    choice = choose_focus(anomalies, findings, cap=2)
    assert [(f["segment_value"], f["detector"]) for f in choice.shown] == [
        ("c", "psi_drift"),
        ("a", "psi_drift"),
    ]
    assert [f["segment_value"] for f in choice.left_out] == ["b"]
    assert choose_focus([], findings, cap=10).left_out == []
    # Open anomalies in the anomalies' order (an incident's root before its consequence),
    # whichever finding came later.
    incident = [row("b", "q", state="open"), row("c", "q", state="open")]
    shown = choose_focus(incident, findings, cap=10).shown
    assert [f["segment_value"] for f in shown] == ["b", "c", "a"]


def test_report_request_from_a_query_string() -> None:
    assert ReportRequest.from_query_string("model=fraud&since=30m") == ReportRequest("fraud", 1800)
    assert ReportRequest.from_query_string("") == ReportRequest()
    for bad, named in (
        ("since=3x", "'since'"),
        ("since=0m", "'since'"),
        ("until=1h", "until"),
        ("model=a&model=b", "'model'"),
        ("since=401d", "'since' must be at most 400d"),
    ):
        with pytest.raises(ValueError, match=named):
            ReportRequest.from_query_string(bad)
    assert ReportRequest.from_query_string("since=400d").since == 400 * 86400


# ---- the command ----------------------------------------------------------------------


def _segwatch(*args: str, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{prelude}\nimport sys\nfrom segwatch.collector.cli import main\nsys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def config(demo_store: Path, tmp_path: Path) -> Path:
    path = tmp_path / "segwatch.yaml"
    path.write_text(f"storage:\n  dsn: chdb://{demo_store}\n")
    return path


def test_segwatch_report_writes_one_self_contained_page(config: Path, tmp_path: Path) -> None:
    done = _segwatch(
        "report", "--config", str(config), "--since", "6h", "-o", "out.html", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote out.html (")
    page = (tmp_path / "out.html").read_text()
    assert "feature.country=BR" in page and "Model sentiment" in page
    assert page.count("<script") == 3  # plotly.js once, the figures, the drawing
    assert page.count(get_plotlyjs()) == 1 and page.count(RENDER_SCRIPT) == 1
    # Every figure has its element, and every element its figure.
    elements = re.findall(r'<div id="(plot-\d+)" class="sw-plot"', page)
    assert len(elements) >= 10 and sorted(elements) == sorted(figures_of(page))
    assert not [tag for tag in ("<script src", "<link", "<img", "<iframe") if tag in page]


def test_segwatch_report_errors(config: Path, tmp_path: Path) -> None:
    bad_since = _segwatch("report", "--config", str(config), "--since", "3x", cwd=tmp_path)
    assert bad_since.returncode == 2 and "argument --since" in bad_since.stderr
    unknown = _segwatch("report", "--config", str(config), "--model", "nope", cwd=tmp_path)
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines()[-1] == (
        "segwatch: error: unknown model 'nope': it has fraud, sentiment"
    )
    assert not (tmp_path / "report.html").exists()
    # Past the cap is bad usage too: exit 2, naming the option as the command spells it.
    too_long = _segwatch("report", "--config", str(config), "--since", "500d", cwd=tmp_path)
    assert too_long.returncode == 2
    assert too_long.stderr.splitlines()[-1].startswith(
        "segwatch: error: --since must be at most 400d"
    )


def test_an_output_that_cannot_be_written_fails_before_the_page_is_made(tmp_path: Path) -> None:
    """The output is checked first: with no store to read, the error is the output's."""
    missing_store = tmp_path / "segwatch.yaml"
    missing_store.write_text(f"storage:\n  dsn: chdb://{tmp_path / 'no-store'}\n")
    done = _segwatch(
        "report", "--config", str(missing_store), "-o", "gone/report.html", cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "segwatch: error: cannot write the report to gone/report.html: the directory "
        f"{tmp_path / 'gone'} does not exist"
    ]
    assert not (tmp_path / "no-store").exists()


def test_a_failed_write_names_the_output_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    from segwatch.collector.cli.report import write_page

    taken = tmp_path / "report.html"
    taken.mkdir()  # renaming the written page over a directory fails
    (taken / "keep").write_text("")
    with pytest.raises(OSError, match=f"^cannot write the report to {re.escape(str(taken))}: "):
        write_page("<html></html>", str(taken))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    write_page("<html></html>", str(tmp_path / "fine.html"))
    assert (tmp_path / "fine.html").read_text() == "<html></html>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fine.html", "report.html"]


def test_segwatch_report_without_plotly_says_what_to_install(config: Path, tmp_path: Path) -> None:
    blocked = _segwatch(
        "report",
        "--config",
        str(config),
        cwd=tmp_path,
        prelude="import sys; sys.modules['plotly'] = None  # not installed",
    )
    assert blocked.returncode == 1
    assert blocked.stderr.strip().splitlines() == [
        "segwatch: error: the report needs plotly, which is not installed: "
        'pip install "segwatch[report]"'
    ]  # one line, and no store was opened for nothing


def test_segwatch_report_through_a_running_collector(collector: Any, tmp_path: Path) -> None:
    """While a collector holds the embedded store, the page comes from its GET /report:
    with what the collector acknowledged (flushed before the reads)."""
    from segwatch.collector.cli.demo import DemoScenario, service_tracer_provider, simulate

    provider = service_tracer_provider(collector.receiver.address, "report-test")
    now = int(time.time())
    scenario = DemoScenario(
        end=now - now % 300,
        baseline_minutes=10,
        drift_minutes=5,
        fraud_per_minute=20,
        sentiment_per_minute=10,
    )
    sent = simulate(scenario, provider)
    provider.force_flush()
    provider.shutdown()
    wait_until(lambda: collector.processor.stats.model_calls >= sent)

    path = tmp_path / "through.yaml"
    path.write_text(f"storage:\n  dsn: chdb://{collector.location.path}\n")
    done = _segwatch("report", "--config", str(path), "-o", "live.html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(through the collector at http://127.0.0.1:" in done.stderr
    page = (tmp_path / "live.html").read_text()
    assert "Model fraud" in page and "Model sentiment" in page
    assert f"<b>{15 * 20:,}</b><span>calls</span>" in page  # the fraud calls sent
    figures = figures_of(page).values()
    heatmaps = [f for f in figures if f["layout"]["meta"]["kind"] == "heatmap"]
    assert len(heatmaps) == 2  # one per model
    assert any("feature.country=BR" in f["data"][0]["y"] for f in heatmaps)
    kinds = [f["layout"]["meta"] for f in figures]
    volumes = {k["dimension"] for k in kinds if k["kind"] == "volume"}
    assert {"__all__", "feature.country"} <= volumes


# ---- GET /report ------------------------------------------------------------------------


@contextmanager
def _serving(store: Path, config: Any = None) -> Iterator[Any]:
    """A LocalApi on ``store`` (token ``report-token``), shut down and closed after."""
    from segwatch.collector.service.api import LocalApi

    client = open_client(parse_dsn(f"chdb://{store}"))
    served = LocalApi("127.0.0.1:0", client, status=dict, config=config, token="report-token")
    served.start()
    try:
        yield served
    finally:
        served.shutdown()
        client.close()


@pytest.fixture
def api(demo_store: Path) -> Iterator[str]:
    with _serving(demo_store) as served:
        yield served.url


def _get(url: str, token: str | None = "report-token") -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_get_report_needs_the_token_and_serves_the_page(api: str) -> None:
    assert _get(f"{api}/report", token=None)[0] == 401
    assert _get(f"{api}/report", token="wrong")[0] == 401
    code, kind, body = _get(f"{api}/report?model=fraud&since=24h")
    assert (code, kind) == (200, "text/html; charset=utf-8")
    assert "feature.country=BR" in body and "Model sentiment" not in body


def test_get_report_names_a_bad_parameter(api: str) -> None:
    for query, named in (
        ("since=3x", "'since'"),
        ("model=nope", "unknown model 'nope'"),
        ("colour=red", "colour"),
        ("since=10000d", "'since' must be at most 400d"),
    ):
        code, kind, body = _get(f"{api}/report?{query}")
        assert (code, kind) == (400, "application/json")
        assert named in json.loads(body)["error"]


def test_get_report_draws_the_page_after_releasing_the_lock(
    demo_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Detector runs and anomaly listings take the API's lock: the page is read under it,
    and drawn (the slow part) after."""
    from segwatch.collector.report import build

    held_while: dict[str, bool] = {}
    read, render = build.read_report, build.render_page
    with _serving(demo_store) as served:

        def reading(*args: Any, **kwargs: Any) -> Any:
            held_while["reading"] = served._lock.locked()
            return read(*args, **kwargs)

        def drawing(report: Any) -> str:
            held_while["drawing"] = served._lock.locked()
            return str(render(report))

        monkeypatch.setattr(build, "read_report", reading)
        monkeypatch.setattr(build, "render_page", drawing)
        code, _, body = _get(f"{served.url}/report?model=fraud")
    assert code == 200 and "feature.country=BR" in body
    assert held_while == {"reading": True, "drawing": False}


def test_get_report_answers_500_for_its_own_failures(
    api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the request's parameters and models are the client's fault (400)."""
    from segwatch.collector.report import build

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(build, "read_report", failing)
    code, kind, body = _get(f"{api}/report?model=fraud")
    assert (code, kind) == (500, "application/json")
    assert json.loads(body)["error"] == "an internal inconsistency"


def test_get_report_reads_on_the_analysts_budget(demo_store: Path) -> None:
    from segwatch.collector.config import ApiConfig, CollectorConfig, StorageConfig

    config = CollectorConfig(
        storage=StorageConfig(dsn=f"chdb://{demo_store}"),
        api=ApiConfig(endpoint="127.0.0.1:0", max_result_rows=10),
    )
    with _serving(demo_store, config) as served:
        code, kind, body = _get(f"{served.url}/report?model=fraud")
    assert (code, kind) == (400, "application/json")
    assert json.loads(body)["error"] == (
        "a report read returned more than 10 rows (api.max_result_rows): ask for a shorter "
        "period, or one model"
    )


@pytest.mark.parametrize("name", ["models.sql", "volume.sql", "drift_grid.sql",
                                  "series.sql", "distribution.sql"])  # fmt: skip
def test_a_report_query_reads_only_the_minutes_of_its_period(client, name: str) -> None:  # type: ignore[no-untyped-def]
    """Over three days of minute rows (864,000), each report query reading the minute rows
    reads those of its hour and a quarter, found by the sorting key's 5-minute slices."""
    client.command(THREE_DAYS, parameters={"end": END})
    end = dt.datetime.fromtimestamp(END, dt.timezone.utc)
    found = rows(
        client_query(ReadLimit(client, 100_000)),
        name,
        model="limits", version="1", stage="serving", dim="feature.d", value="v1",
        quantity="metric.m0", step=300, bins=10,
        start=end - dt.timedelta(hours=1), end=end,
        baseline_start=end - dt.timedelta(minutes=75), baseline_end=end - dt.timedelta(minutes=15),
        window_start=end - dt.timedelta(minutes=15), window_end=end,
    )  # fmt: skip
    assert found  # the period's calls are there
