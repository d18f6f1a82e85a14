"""The report page's stylesheet and the script that draws its plots (static text)."""

from __future__ import annotations

__all__ = ["PAGE_CSS", "RENDER_SCRIPT"]

PAGE_CSS = """
:root { --ink: #1d2330; --muted: #5b6472; --line: #e3e6eb; --accent: #0b3d91; --bad: #d62728; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 "Liberation Sans", Helvetica, Arial, sans-serif;
       color: var(--ink); background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 18px 32px 12px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .meta { margin: 0 0 8px; color: #c9ced8; }
header nav a { color: #fff; margin-right: 16px; text-decoration: none;
               border-bottom: 2px solid #6d8bd1; }
main { max-width: 1320px; margin: 0 auto; padding: 8px 32px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 8px 24px 24px; margin: 24px 0; }
h2 { font-size: 20px; margin: 16px 0 8px; }
h3 { font-size: 16px; margin: 28px 0 4px; border-top: 1px solid var(--line); padding-top: 16px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.card b { display: block; font-size: 18px; }
.card span { color: var(--muted); font-size: 12px; }
.explain, figcaption, .empty { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; color: var(--muted); font-weight: 600; border-bottom: 2px solid var(--line);
     padding: 6px 8px; white-space: nowrap; }
td { border-bottom: 1px solid var(--line); padding: 6px 8px; vertical-align: top; }
tbody tr:nth-child(even) { background: #fafbfc; }
code { font: 11px "Liberation Mono", Menlo, monospace; background: #eef1f5; padding: 1px 4px;
       border-radius: 3px; display: inline-block; margin: 1px 0; }
.segment { font-weight: 600; white-space: nowrap; }
.sentence { display: block; min-width: 320px; }
.state { border-radius: 10px; padding: 1px 8px; font-size: 12px; color: #fff; }
.state.open { background: var(--bad); }
.state.resolved { background: #2ca02c; }
.finding { border-left: 4px solid var(--bad); padding: 2px 0 4px 14px; margin: 16px 0 24px; }
.finding p { margin: 4px 0; }
.traces { font-size: 12px; color: var(--muted); }
.left-out { font-size: 13px; color: var(--muted); }
.left-out ul { columns: 2; margin: 4px 0; }
.pair, .grid { display: grid; gap: 16px;
               grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); }
figure.plot { margin: 0; min-width: 0; }
figure.plot.wide { margin-top: 8px; }
.sw-plot { width: 100%; }
"""

RENDER_SCRIPT = """
(function () {
  var figures = JSON.parse(document.getElementById("sw-figures").textContent);
  var drawn = Object.keys(figures).map(function (id) {
    var figure = figures[id];
    return Plotly.newPlot(id, figure.data, figure.layout,
                          {displaylogo: false, responsive: true, displayModeBar: "hover"});
  });
  Promise.all(drawn).then(function () {
    document.body.setAttribute("data-plots-rendered", String(drawn.length));
  }, function (error) {
    document.body.setAttribute("data-plots-error", String(error));
  });
})();
"""
