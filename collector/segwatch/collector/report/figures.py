"""The report's plots, as Plotly figures: drift heat map, distributions, time series, volume.

Plotly is an optional extra (``pip install "segwatch[report]"``): it is imported
by :func:`require_plotly` when a report is made, so the rest of the collector
never needs it. Each figure carries ``layout.meta`` saying what it shows
(``kind``, and for the heat map the highlighted cells), which the page's tests
read in the browser.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any

from .data import DriftGrid, Focus, segment_label
from .request import DriftSettings

if TYPE_CHECKING:
    from plotly.graph_objects import Figure  # type: ignore[import-untyped]

__all__ = [
    "PlotlyMissingError",
    "distribution_figure",
    "drift_heatmap",
    "performance_figure",
    "require_plotly",
    "series_figure",
    "volume_figure",
]

BASELINE = "#9a9a9a"
WINDOW = "#d62728"
HIGHLIGHT = "#0b3d91"
_FONT = {"family": "Liberation Sans, Helvetica, Arial, sans-serif", "size": 12}
_LEGEND = {
    "x": 0.99,
    "y": 0.98,
    "xanchor": "right",
    "yanchor": "top",
    "bgcolor": "rgba(255,255,255,0.8)",
}
_PSI_CAP = 1.0  # PSI at or above this is the darkest red (0.25 is "large" by convention)


class PlotlyMissingError(ImportError):
    """The report needs plotly, which is not installed."""


def require_plotly() -> None:
    """Raise :class:`PlotlyMissingError` (one line saying what to install) without plotly."""
    try:
        import plotly.graph_objects  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise PlotlyMissingError(
            'the report needs plotly, which is not installed: pip install "segwatch[report]"'
        ) from None


def _figure(**layout: Any) -> Figure:
    import plotly.graph_objects as go

    base = {
        "template": "plotly_white",
        "font": _FONT,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "title": {"x": 0.01, "xanchor": "left", "font": {"size": 15}},
    }
    figure = go.Figure()
    figure.update_layout(base)
    figure.update_layout(layout)
    return figure


def _findings_in(grid: DriftGrid, findings: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(segment, quantity) → the findings' sentences, for the grid's version and stage."""
    marked: dict[tuple[str, str], list[str]] = {}
    for f in findings:
        if (f["model_version"], f["model_stage"]) != (grid.version, grid.stage):
            continue
        key = (segment_label(f["segment_dim"], f["segment_value"]), f["quantity"])
        if key[0] in grid.segments and key[1] in grid.quantities:
            marked.setdefault(key, []).append(f"{f['detector']}: {f['details']}")
    return {
        key: "<br>".join(dict.fromkeys(_wrap(s) for s in texts)) for key, texts in marked.items()
    }


def _wrap(text: str, width: int = 90) -> str:
    """Hover text in lines of about ``width`` characters."""
    lines, line = [], ""
    for word in str(text).split():
        if line and len(line) + len(word) > width:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


def drift_heatmap(
    grid: DriftGrid, findings: list[dict[str, Any]], settings: DriftSettings, title: str
) -> Figure:
    """Segments (rows) × quantities (columns), PSI of the window against the baseline.

    Cells whose segment had too few calls to test are grey; cells with a finding
    are framed, and their segments' labels bold.
    """
    import plotly.graph_objects as go

    segments, quantities = grid.segments, grid.quantities
    marked = _findings_in(grid, findings)

    def layer(tested: bool) -> tuple[list[list[float | None]], list[list[str]]]:
        z: list[list[float | None]] = []
        text: list[list[str]] = []
        for segment in segments:
            cells = [grid.cell(segment, q) for q in quantities]
            z.append([c.psi if c is not None and c.tested == tested else None for c in cells])
            text.append(
                [f"{c.psi:.2f}" if c is not None and c.tested == tested else "" for c in cells]
            )
        return z, text

    hover = [[_cell_hover(grid, s, q, marked.get((s, q))) for q in quantities] for s in segments]
    figure = _figure(
        title={"text": title},
        height=140 + 26 * len(segments),
        xaxis={"title": {"text": "quantity"}, "side": "top", "tickangle": 0},
        yaxis={
            "title": {"text": "segment"},
            "autorange": "reversed",
            "tickvals": segments,
            "ticktext": [f"<b>{s}</b>" if any(k[0] == s for k in marked) else s for s in segments],
        },
        margin={"l": 260, "r": 20, "t": 90, "b": 20},
        meta={"kind": "heatmap", "highlighted": [f"{s}|{q}" for s, q in marked]},
    )
    z, text = layer(True)
    figure.add_trace(
        go.Heatmap(
            z=z,
            x=quantities,
            y=segments,
            text=text,
            texttemplate="%{text}",
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            zmin=0,
            zmax=_PSI_CAP,
            colorscale="YlOrRd",
            colorbar={"title": {"text": "PSI"}, "len": min(1.0, 300 / (26 * len(segments) + 1))},
            xgap=2,
            ygap=2,
            name="PSI",
        )
    )
    z, text = layer(False)
    figure.add_trace(
        go.Heatmap(
            z=z,
            x=quantities,
            y=segments,
            text=text,
            texttemplate="%{text}",
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            zmin=0,
            zmax=_PSI_CAP,
            colorscale=[[0, "#f2f2f2"], [1, "#bdbdbd"]],
            showscale=False,
            xgap=2,
            ygap=2,
            name=f"under {settings.min_support} calls: not tested",
        )
    )
    for segment, quantity in marked:  # a frame around each cell with a finding
        x, y = quantities.index(quantity), segments.index(segment)
        figure.add_shape(
            type="rect",
            x0=x - 0.5,
            x1=x + 0.5,
            y0=y - 0.5,
            y1=y + 0.5,
            line={"color": HIGHLIGHT, "width": 3},
            name="finding",
        )
    return figure


def _cell_hover(grid: DriftGrid, segment: str, quantity: str, finding: str | None) -> str:
    cell = grid.cell(segment, quantity)
    if cell is None:
        return f"{segment}<br>{quantity}: not measured in this segment"
    lines = [
        f"<b>{segment}</b> · {quantity}",
        f"PSI {cell.psi:.3f}",
        f"calls: {cell.support} in the window, {cell.baseline_support} in the baseline",
    ]
    if math.isfinite(cell.baseline_mean) and math.isfinite(cell.current_mean):
        lines.append(f"mean {cell.baseline_mean:.4g} → {cell.current_mean:.4g}")
    if not cell.tested:
        lines.append("too few calls for the detectors to test")
    if finding:
        lines.append(finding)
    return "<br>".join(lines)


def distribution_figure(focus: Focus) -> Figure | None:
    """The finding's quantity in its segment: the window's distribution over the baseline's."""
    import plotly.graph_objects as go

    distribution, f = focus.distribution, focus.finding
    if distribution is None:
        return None
    segment = segment_label(f["segment_dim"], f["segment_value"])
    figure = _figure(
        title={"text": f"{f['quantity']} in {segment}: window against baseline"},
        height=340,
        yaxis={"title": {"text": "share of calls"}, "tickformat": ".0%"},
        legend=_LEGEND,
        meta={"kind": "distribution", "segment": segment, "quantity": f["quantity"]},
    )
    if distribution.numeric:
        bins = distribution.bins()
        for name, shares, color in (
            ("baseline", bins.baseline, BASELINE),
            ("window", bins.current, WINDOW),
        ):
            figure.add_trace(
                go.Scatter(
                    x=bins.centers,
                    y=shares,
                    name=name,
                    mode="lines",
                    line_shape="hvh",
                    line={"color": color, "width": 2},
                    fill="tozeroy",
                    hovertemplate="%{x:.4g}: %{y:.1%}<extra>" + name + "</extra>",
                )
            )
        figure.update_xaxes(title={"text": f["quantity"]}, type="log" if bins.log_scale else "-")
    else:
        names, baseline, current = distribution.category_shares()
        for name, shares, color in (("baseline", baseline, BASELINE), ("window", current, WINDOW)):
            figure.add_trace(go.Bar(x=names, y=shares, name=name, marker_color=color))
        figure.update_layout(barmode="group", xaxis={"title": {"text": f["quantity"]}})
    return figure


def series_figure(focus: Focus) -> Figure | None:
    """The quantity over time in the segment (and in the whole model), the finding's
    baseline and window shaded."""
    import plotly.graph_objects as go

    series, f = focus.series, focus.finding
    if not series.times:
        return None
    segment = segment_label(f["segment_dim"], f["segment_value"])
    minutes = series.step // 60
    figure = _figure(
        height=340,
        xaxis={"title": {"text": "time (UTC)"}},
        legend=_LEGEND,
        meta={"kind": "series", "segment": segment, "quantity": f["quantity"]},
    )
    if any(math.isfinite(m) for m in series.means):
        figure.update_layout(
            title={"text": f"{f['quantity']} over time: mean per {minutes} min"},
            yaxis={"title": {"text": f"mean {f['quantity']}"}},
        )
        figure.add_trace(
            go.Scatter(
                x=series.times,
                y=series.means,
                name=segment,
                mode="lines",
                line={"color": WINDOW, "width": 2},
            )
        )
        figure.add_trace(
            go.Scatter(
                x=series.model_times,
                y=series.model_means,
                name="whole model",
                mode="lines",
                line={"color": BASELINE, "dash": "dot"},
            )
        )
    else:
        figure.update_layout(
            title={"text": f"{f['quantity']} over time: share per {minutes} min"},
            yaxis={"title": {"text": "share of calls"}, "tickformat": ".0%"},
        )
        totals: dict[str, float] = {}
        for counts in series.categories:
            for name, calls in counts.items():
                totals[name] = totals.get(name, 0.0) + calls
        for name in sorted(totals, key=lambda n: -totals[n])[:5]:
            shares = [c.get(name, 0.0) / (sum(c.values()) or 1) for c in series.categories]
            figure.add_trace(go.Scatter(x=series.times, y=shares, name=name, mode="lines"))
    _shade(figure, f["baseline_start"], f["baseline_end"], BASELINE, "baseline")
    _shade(figure, f["window_start"], f["window_end"], WINDOW, "window")
    return figure


def _shade(figure: Figure, start: Any, end: Any, color: str, label: str) -> None:
    figure.add_vrect(
        x0=_iso(start),
        x1=_iso(end),
        fillcolor=color,
        opacity=0.15,
        line_width=0,
        layer="below",
        annotation_text=label,
        annotation_position="top left",
        annotation_font={"size": 11, "color": "#555"},
    )


def _iso(moment: Any) -> str:
    return moment.isoformat() if isinstance(moment, dt.datetime) else str(moment)


def volume_figure(
    dim: str, series: dict[str, tuple[list[dt.datetime], list[float]]], step: int
) -> Figure:
    """Calls per ``step`` of each segment of one dimension (of the whole model for __all__)."""
    import plotly.graph_objects as go

    what = "the whole model" if dim == "__all__" else dim
    figure = _figure(
        title={"text": f"Calls per {step // 60} min: {what}"},
        height=300,
        xaxis={"title": {"text": "time (UTC)"}},
        yaxis={"title": {"text": "calls"}, "rangemode": "tozero"},
        meta={"kind": "volume", "dimension": dim},
    )
    for value, (times, calls) in series.items():
        figure.add_trace(
            go.Scatter(x=times, y=calls, mode="lines", name=value, showlegend=dim != "__all__")
        )
    return figure


def performance_figure(label: str, kind: str, rows: list[dict[str, Any]], step: int) -> Figure:
    """One label's grade of the model over time (accuracy, or mean absolute error), with
    the labelled calls behind each point."""
    import plotly.graph_objects as go

    metric = "mean absolute error" if kind == "regression" else "accuracy"
    figure = _figure(
        title={"text": f"{label}: {metric} per {step // 60} min of calls"},
        height=320,
        xaxis={"title": {"text": "time of the calls (UTC)"}},
        yaxis={
            "title": {"text": "labelled calls"},
            "side": "right",
            "showgrid": False,
            "rangemode": "tozero",
        },
        yaxis2={
            "title": {"text": metric},
            "overlaying": "y",
            "side": "left",
            **({} if kind == "regression" else {"tickformat": ".0%"}),
        },
        legend=_LEGEND,
        meta={"kind": "performance", "label": label},
    )
    times = [r["t"] for r in rows]
    # The calls behind each point as bars on the right, under the grade's line.
    figure.add_trace(
        go.Bar(
            x=times, y=[r["labelled"] for r in rows], name="labelled calls", marker_color="#dddddd"
        )
    )
    figure.add_trace(
        go.Scatter(
            x=times,
            y=[r["value"] for r in rows],
            name=metric,
            mode="lines+markers",
            line={"color": HIGHLIGHT},
            yaxis="y2",
        )
    )
    return figure
