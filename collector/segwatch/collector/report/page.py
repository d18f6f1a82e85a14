"""The report as one self-contained HTML page: tables, plots, and plotly.js embedded once.

The page loads nothing: plotly.js is inlined, the figures are JSON in the page,
and its Content-Security-Policy forbids every fetch, so it opens offline, from
a file or from the collector's ``GET /report``. Every value from the store is
escaped: in the HTML as HTML, in the figures' JSON ``<``, ``>`` and ``&`` as
``\\u003c``, ``\\u003e``, ``\\u0026`` (so no value can end or comment out the
script element that holds it), and in what Plotly draws as Plotly's markup
(:func:`~.figures.plotly_text`). Once every plot is drawn,
``<body data-plots-rendered="N">`` says so (``data-plots-error`` if one failed),
for people and browser tests alike.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .data import ModelReport, Report
from .figures import distribution_figure, performance_figure, series_figure, volume_figure
from .focus import MAX_FOCUS, Focus
from .heatmap import drift_heatmap
from .page_style import PAGE_CSS, RENDER_SCRIPT
from .reads import segment_label

if TYPE_CHECKING:
    from plotly.graph_objects import Figure  # type: ignore[import-untyped]

__all__ = ["render_page"]

_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data: blob:; font-src data:"
)


class _Plots:
    """The page's figures by element id, in page order."""

    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}

    def add(self, figure: Figure | None, caption: str, wide: bool = False) -> str:
        if figure is None:
            return ""
        plot_id = f"plot-{len(self.figures) + 1}"
        self.figures[plot_id] = figure
        kind = html.escape(str((figure.layout.meta or {}).get("kind", "")))
        return (
            f'<figure class="plot{" wide" if wide else ""}"><div id="{plot_id}" '
            f'class="sw-plot" data-kind="{kind}"></div>'
            f"<figcaption>{caption}</figcaption></figure>"
        )

    def json(self) -> str:
        import plotly.io as pio  # type: ignore[import-untyped]

        data = {pid: json.loads(pio.to_json(f, validate=False)) for pid, f in self.figures.items()}
        text = json.dumps(data, separators=(",", ":"))
        # Inside a <script> element "</script" ends it and "<!--" changes how the HTML
        # parser reads up to its end; the three characters appear in JSON only in strings,
        # where the escapes mean the same characters to JSON.parse.
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(report: Report) -> str:
    """The whole page for ``report`` (plotly must be installed: see ``require_plotly``)."""
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    plots = _Plots()
    sections = [_model_section(model, report, plots) for model in report.models]
    if not sections:
        sections = [f'<p class="empty">No model calls in the last {_duration(report.since)}.</p>']
    nav = "".join(f'<a href="#model-{_e(m.name)}">{_e(m.name)}</a>' for m in report.models)
    generated = report.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>segwatch report {generated}</title>
<style>{PAGE_CSS}</style></head>
<body>
<header><h1>segwatch report</h1>
<p class="meta">{_e(report.store) or "the store"} · the last {_duration(report.since)} ·
generated {generated}</p><nav>{nav}</nav></header>
<main>{"".join(sections)}</main>
<script>{get_plotlyjs()}</script>
<script id="sw-figures" type="application/json">{plots.json()}</script>
<script>{RENDER_SCRIPT}</script>
</body></html>
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _duration(seconds: int) -> str:
    """``24 h``, ``7 d``, ``30 min``: days only from two on."""
    for unit, size in (("d", 86400 if seconds >= 2 * 86400 else 0), ("h", 3600), ("min", 60)):
        if size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _time(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)[:16].replace("T", " ")


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _model_section(model: ModelReport, report: Report, plots: _Plots) -> str:
    cards = "".join(
        f'<div class="card"><b>{value}</b><span>{label}</span></div>'
        for value, label in (
            (f"{model.calls:,.0f}", "calls"),
            (model.open_incidents, "open incidents"),
            (model.open_anomalies, "open anomalies"),
            (model.findings_total, "findings"),
            (
                f"{_time(model.first_minute)} – {model.last_minute:%H:%M}",
                "first and last minute (UTC)",
            ),
        )
    )
    parts = [
        f'<section id="model-{_e(model.name)}"><h2>Model {_e(model.name)}</h2>',
        f'<div class="cards">{cards}</div>',
        _anomalies_table(model.anomalies, model.anomalies_total),
        _findings_table(model.findings, model.findings_total),
        _drift_part(model, report, plots),
        _focus_part(model, plots),
        _volume_part(model, plots),
        _performance_part(model, plots),
        "</section>",
    ]
    return "".join(parts)


def _table(columns: list[str], rows: Iterable[list[str]], empty: str) -> str:
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{empty}</p>'
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _traces(ids: Any) -> str:
    return " ".join(f"<code>{_e(t)}</code>" for t in (ids or []))


def _segment(row: dict[str, Any]) -> str:
    label = segment_label(row["segment_dim"], row["segment_value"])
    return f'<span class="segment">{_e(label)}</span>'


def _anomalies_table(anomalies: list[dict[str, Any]], total: int) -> str:
    rows = (
        [
            f'<span class="state {_e(a["state"])}">{_e(a["state"])}</span>',
            _e("└ consequence" if a["role"] == "consequence" else a["role"]),
            _time(a["opened_at"]),
            _time(a["resolved_at"]),
            _e(a["detector"]),
            _segment(a),
            _e(a["quantity"]),
            _number(a["score"]),
            f'<span class="sentence">{_e(_sentence(a))}</span>',
            _traces(a["exemplar_trace_ids"]),
        ]
        for a in anomalies
    )
    columns = [
        "state",
        "incident",
        "opened",
        "resolved",
        "detector",
        "segment",
        "quantity",
        "score",
        "what happened",
        "exemplar traces",
    ]
    more = f" (the first {len(anomalies)} of {total}, open first)" if total > len(anomalies) else ""
    return (
        f"<h3>Anomalies by incident: open, and resolved in the period{more}</h3>"
        '<p class="explain">An anomaly opens once its detector finds the same segment and '
        "quantity in enough consecutive windows (persistence), and resolves when it no "
        "longer does. Anomalies that share a cause are one incident: its root (the change "
        "that explains the others) first, then its consequences, each saying why it "
        "belongs; open incidents first, the most severe first. Exemplar trace ids open the "
        "calls behind it in a trace view.</p>"
        + _table(columns, rows, "No anomaly is open or was resolved in the period.")
    )


def _sentence(anomaly: dict[str, Any]) -> str:
    """A consequence's sentence starts with why it belongs to its incident."""
    reason = anomaly.get("reason") or ""
    return f"{reason}. {anomaly['details']}" if reason else str(anomaly["details"])


def _findings_table(findings: list[dict[str, Any]], total: int) -> str:
    rows = (
        [
            _time(f["window_end"]),
            _e(f["detector"]),
            _segment(f),
            _e(f["quantity"]),
            _number(f["score"]),
            _number(f["threshold"]),
            _number(f["support"]),
            f'<span class="sentence">{_e(f["details"])}</span>',
            _traces(f["exemplar_trace_ids"]),
        ]
        for f in findings
    )
    columns = [
        "window end",
        "detector",
        "segment",
        "quantity",
        "score",
        "threshold",
        "calls",
        "what the detector found",
        "exemplar traces",
    ]
    more = f" (the latest {len(findings)} of {total})" if total > len(findings) else ""
    return (
        f"<h3>Latest detector findings{more}</h3>"
        '<p class="explain">What each detector run found, window by window, latest first: '
        "the most specific segment that explains each change.</p>"
        + _table(columns, rows, "No detector found anything in the period.")
    )


def _drift_part(model: ModelReport, report: Report, plots: _Plots) -> str:
    settings = report.settings
    parts = ["<h3>Drift by segment</h3>"]
    for grid in model.grids:
        name = f"{model.name} {grid.version} ({grid.stage})"
        caption = (
            f"Each cell is the Population Stability Index of a quantity (column) in one "
            f"segment (row): the window {grid.window_start:%H:%M}–{grid.window_end:%H:%M} "
            f"UTC against the {_duration(settings.baseline)} before it, binned as the "
            f"psi_drift detector bins it. Below 0.1 nothing moved; above "
            f"{settings.threshold:g} the detector flags it. <b>Framed</b> cells have "
            "findings in the period, or an open anomaly; grey cells had under "
            f"{settings.min_support} calls in a window, too few to test. Colours stop at 1."
        )
        figure = drift_heatmap(grid, model.latest_findings, settings, f"PSI, every segment: {name}")
        parts.append(plots.add(figure, caption, wide=True))
    if not model.grids:
        parts.append('<p class="empty">No calls in the latest window.</p>')
    return "".join(parts)


def _focus_part(model: ModelReport, plots: _Plots) -> str:
    if not model.focus:
        return ""
    parts = [
        "<h3>What changed, finding by finding</h3>"
        '<p class="explain">Each segment and quantity with a finding in the period or an '
        "open anomaly, open anomalies first, then the latest: its distribution in the "
        "finding's window against its baseline, and its time series.</p>"
    ]
    for focus in model.focus:
        f = focus.finding
        parts.append(
            f'<div class="finding"><p><b>{_e(f["detector"])}</b> · {_segment(f)} · '
            f"{_e(f['quantity'])} · score {_number(f['score'])}</p>"
            f'<p class="sentence">{_e(f["details"])}</p>'
            f'<p class="traces">exemplar traces: {_traces(f["exemplar_trace_ids"])}</p>'
            '<div class="pair">'
        )
        parts.append(plots.add(distribution_figure(focus), _distribution_caption(focus)))
        parts.append(plots.add(series_figure(focus), _series_caption(focus, model.step)))
        parts.append("</div></div>")
    parts.append(_left_out(model.left_out))
    return "".join(parts)


def _left_out(findings: list[dict[str, Any]]) -> str:
    """What the page did not draw up close (past :data:`MAX_FOCUS`), each named."""
    if not findings:
        return ""
    items = "".join(
        f"<li>{_e(f['detector'])} · {_segment(f)} · {_e(f['quantity'])} · score "
        f"{_number(f['score'])} · window end {_time(f['window_end'])}</li>"
        for f in findings
    )
    return (
        f'<div class="left-out"><p><b>{len(findings)} more segments and quantities with '
        f"findings are not drawn here</b> (a page draws {MAX_FOCUS} per model, open anomalies "
        "first); <code>segwatch anomalies --findings</code> lists every finding.</p>"
        f"<ul>{items}</ul></div>"
    )


def _distribution_caption(focus: Focus) -> str:
    f, distribution = focus.finding, focus.distribution
    text = (
        f"Share of the segment's calls per value, rebuilt from the stored histograms: grey "
        f"the baseline ({_time(f['baseline_start'])}–{_time(f['baseline_end'])[11:]}), red "
        f"the window ({_time(f['window_start'])}–{_time(f['window_end'])[11:]} UTC)."
    )
    if distribution is not None and distribution.numeric:
        before, after = distribution.baseline.mean(), distribution.current.mean()
        if math.isfinite(before) and math.isfinite(after) and before:
            text += f" Mean {before:.4g} → {after:.4g} ({after / before:.1f}×)."
    return text


def _series_caption(focus: Focus, step: int) -> str:
    f = focus.finding
    shaded = "shaded, the finding's baseline and window."
    if f["segment_dim"] == "__all__":
        return f"Per {_duration(step)}: the quantity in the whole model; {shaded}"
    segment = _e(segment_label(f["segment_dim"], f["segment_value"]))
    return (
        f"Per {_duration(step)}: the quantity in {segment} (solid) and in the whole "
        f"model (dotted, numbers only); {shaded}"
    )


def _volume_part(model: ModelReport, plots: _Plots) -> str:
    parts = ["<h3>Volume per segment</h3>", '<div class="grid">']
    for dim, series in model.volume.items():
        caption = (
            "Calls the model answered, per interval."
            if dim == "__all__"
            else f"Calls per interval in each segment of {_e(dim)}: a segment that falls "
            "silent, or floods, shows here first."
        )
        parts.append(plots.add(volume_figure(dim, series, model.step), caption))
    parts.append("</div>")
    return "".join(parts)


def _performance_part(model: ModelReport, plots: _Plots) -> str:
    if not model.performance:
        if model.unread_labels:
            return (
                "<h3>Performance</h3>"
                f'<p class="empty">{model.unread_labels} labels are stored for this model, '
                "but the config grades none of them: declare models."
                f"{_e(model.name)}.labels to see its accuracy here.</p>"
            )
        return ""
    parts = ["<h3>Performance, from labels</h3>", '<div class="grid">']
    by_label: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in model.performance:
        by_label.setdefault((row["label_name"], row["kind"]), []).append(row)
    for (label, kind), rows in by_label.items():
        what = "mean absolute error" if kind == "regression" else "share of calls predicted right"
        caption = (
            f"The {what} against {_e(label)}, by when the call was made (labels arrive "
            "later); bars: the calls that have a label."
        )
        parts.append(plots.add(performance_figure(label, kind, rows, model.step), caption))
    parts.append("</div>")
    return "".join(parts)
