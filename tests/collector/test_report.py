"""segwatch report and GET /report: what the page reads from the demo's store, the command's
exit codes, and the API route's auth and errors. (The page in a real browser:
test_report_browser.py.)"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.report import ReportRequest, UnknownModelError, client_query
from segwatch.collector.report.data import Report, read_report
from segwatch.collector.report.request import DriftSettings

pytest.importorskip("plotly", reason="the report needs the extra segwatch[report]")

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


def test_report_request_from_a_query_string() -> None:
    assert ReportRequest.from_query_string("model=fraud&since=30m") == ReportRequest("fraud", 1800)
    assert ReportRequest.from_query_string("") == ReportRequest()
    for bad, named in (
        ("since=3x", "'since'"),
        ("since=0m", "'since'"),
        ("until=1h", "until"),
        ("model=a&model=b", "'model'"),
    ):
        with pytest.raises(ValueError, match=named):
            ReportRequest.from_query_string(bad)


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
    assert page.count("Plotly.newPlot") == 1 or "newPlot" in page
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
    """While a collector holds the embedded store, the page comes from its GET /report."""
    path = tmp_path / "through.yaml"
    path.write_text(f"storage:\n  dsn: chdb://{collector.location.path}\n")
    done = _segwatch("report", "--config", str(path), "-o", "live.html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(through the collector at http://127.0.0.1:" in done.stderr
    assert "No model calls in the last 24 h." in (tmp_path / "live.html").read_text()


# ---- GET /report ------------------------------------------------------------------------


@pytest.fixture
def api(demo_store: Path) -> Iterator[str]:
    from segwatch.collector.service.api import LocalApi

    client = open_client(parse_dsn(f"chdb://{demo_store}"))
    served = LocalApi("127.0.0.1:0", client, status=dict, token="report-token")
    served.start()
    try:
        yield served.url
    finally:
        served.shutdown()
        client.close()


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
    ):
        code, kind, body = _get(f"{api}/report?{query}")
        assert (code, kind) == (400, "application/json")
        assert named in json.loads(body)["error"]
