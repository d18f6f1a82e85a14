"""The report page in a real browser: headless Chromium (Debian's ``chromium``) opens the file
from disk with the network off, and a script in the page checks what a person would see.

The check is a script added to a copy of the page: it records every JavaScript error
(and Content-Security-Policy violation) from the first line on, waits for the page to
say its plots are drawn, and writes its verdict into the DOM, which ``--dump-dom``
prints. A screenshot is saved for people to look at: under ``$SEGWATCH_ARTIFACTS``
when set, else the test's temporary directory; the run prints where.

A second page, from a copy of the demo's store holding a country named like markup
(``<!--<script>...``), must draw every plot too and show the name as text.

Skipped only when chromium is absent and ``CI`` is not set (``.ci/run`` installs it).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_report import HOSTILE, make_hostile_store

from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.report import ReportRequest, build_report_page, client_query

pytest.importorskip("plotly", reason="the report needs the extra segwatch[report]")

OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
"""Every request the page might make fails: no proxy listens on port 9, no name resolves."""

_BEFORE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push("error: " + e.message); });
window.addEventListener("unhandledrejection", function (e) {
  window.__errors.push("rejection: " + e.reason); });
document.addEventListener("securitypolicyviolation", function (e) {
  window.__errors.push("csp: " + e.violatedDirective + " " + e.blockedURI); });
var __consoleError = console.error;
console.error = function () {
  window.__errors.push("console: " + Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments); };
</script>"""

_CHECK = """<script>
(function check(tries) {
  var body = document.body;
  if (!body.hasAttribute("data-plots-rendered") && !body.hasAttribute("data-plots-error")
      && tries < 200) { setTimeout(function () { check(tries + 1); }, 50); return; }
  var plots = Array.prototype.slice.call(document.querySelectorAll(".sw-plot"));
  var verdict = {errors: window.__errors, rendered: body.getAttribute("data-plots-rendered"),
                 failed: body.getAttribute("data-plots-error"), plots: plots.length,
                 empty: [], heatmap: null, distribution: null, remote: [],
                 titles: Array.prototype.map.call(document.querySelectorAll(".sw-plot .gtitle"),
                                                  function (t) { return t.textContent; }),
                 segments: Array.prototype.map.call(document.querySelectorAll("span.segment"),
                                                    function (s) { return s.textContent; })};
  plots.forEach(function (div) {
    var svg = div.querySelector(".main-svg");
    var drawn = div.querySelectorAll(".plot g.trace, .plot g.hm, .plot image").length;
    if (!svg || !drawn || !div._fullData || !div._fullData.length) verdict.empty.push(div.id);
  });
  plots.filter(function (div) { return div.dataset.kind === "heatmap"; }).forEach(function (div) {
    var ticks = Array.prototype.map.call(div.querySelectorAll(".ytick text"), function (t) {
      return {text: t.textContent, bold: !!t.querySelector("tspan[style*='bold']")}; });
    verdict.heatmap = verdict.heatmap || {
      rows: div.data[0].y, highlighted: div.layout.meta.highlighted, ticks: ticks,
      frames: div.querySelectorAll(".shapelayer path").length};
  });
  plots.filter(function (div) { return div.dataset.kind === "distribution"; })
       .forEach(function (div) {
    var meta = div.layout.meta;
    if (meta.segment === "feature.country=BR" && meta.quantity === "feature.amount")
      verdict.distribution = {traces: div.querySelectorAll(".plot g.trace").length,
                              names: div.data.map(function (t) { return t.name; })};
  });
  document.querySelectorAll("[src], [href]").forEach(function (el) {
    var target = el.getAttribute("src") || el.getAttribute("href");
    if (/^(https?:)?\\/\\//i.test(target)) verdict.remote.push(target); });
  var out = document.createElement("pre");
  out.id = "verdict";
  out.textContent = JSON.stringify(verdict);
  body.appendChild(out);
})(0);
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run the browser test (.ci/run)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def _chromium(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=15000",
            *OFFLINE,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _page(store: Path) -> str:
    client = open_client(parse_dsn(f"chdb://{store}"))
    try:
        return build_report_page(client_query(client), ReportRequest(), store="the demo's store")
    finally:
        client.close()


def _verdict(chromium: str, page: str, directory: Path) -> dict[str, Any]:
    """What the check script in a copy of ``page`` saw, Chromium having drawn it offline."""
    checked = directory / "checked.html"
    checked.write_text(
        page.replace("<head>", "<head>" + _BEFORE, 1).replace("</body>", _CHECK + "</body>", 1)
    )
    dumped = _chromium(chromium, "--dump-dom", checked.as_uri())
    match = re.search(r'<pre id="verdict">(.*?)</pre>', dumped.stdout, re.S)
    assert match, f"no verdict: the page's check did not run\n{dumped.stderr[-2000:]}"
    verdict: dict[str, Any] = json.loads(html.unescape(match.group(1)))
    assert verdict["errors"] == [] and verdict["failed"] is None
    assert verdict["plots"] >= 10 and verdict["rendered"] == str(verdict["plots"])
    assert verdict["empty"] == []
    assert verdict["remote"] == []
    return verdict


def test_the_report_renders_offline_with_the_drift_marked(
    demo_store: Path, tmp_path: Path, chromium: str, capsys: pytest.CaptureFixture[str]
) -> None:
    page = _page(demo_store)
    report = tmp_path / "report.html"
    report.write_text(page)
    verdict = _verdict(chromium, page, tmp_path)

    heatmap = verdict["heatmap"]
    assert "feature.country=BR" in heatmap["rows"]
    assert "feature.country=BR|feature.amount" in heatmap["highlighted"]
    assert {"text": "feature.country=BR", "bold": True} in heatmap["ticks"]
    assert {"text": "feature.country=US", "bold": False} in heatmap["ticks"]
    assert heatmap["frames"] >= 1
    assert verdict["distribution"] == {"traces": 2, "names": ["baseline", "window"]}

    shot = tmp_path / "report.png"
    taken = _chromium(chromium, f"--screenshot={shot}", "--window-size=1400,3000", report.as_uri())
    assert taken.returncode == 0 and shot.stat().st_size > 50_000, taken.stderr[-2000:]
    artifacts = os.environ.get("SEGWATCH_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shot = Path(shutil.copy(shot, Path(artifacts) / "report.png"))
        shutil.copy(report, Path(artifacts) / "report.html")
    with capsys.disabled():
        print(f"\nthe report page as Chromium draws it: {shot}")


def test_a_value_like_markup_is_drawn_as_text(
    demo_store: Path, tmp_path: Path, chromium: str
) -> None:
    """A country named ``<!--<script>"<b>&amp;BR</b>``: an unescaped ``<!--`` inside the
    figures' script element swallowed the drawing script (no plot drawn), and Plotly drew
    its ``<b>`` as bold and its ``&amp;`` as ``&``."""
    page = _page(make_hostile_store(demo_store, tmp_path))
    verdict = _verdict(chromium, page, tmp_path)
    label = f"feature.country={HOSTILE}"
    assert {"text": label, "bold": True} in verdict["heatmap"]["ticks"]  # framed: a finding
    assert f"feature.amount in {label}: window against baseline" in verdict["titles"]
    assert label in verdict["segments"]  # the tables
