"""The report's plots, as Plotly figures: distributions, time series, volume, performance
(the drift heat map: :mod:`.heatmap`), and what every figure shares.

Plotly is an optional extra (``pip install "segwatch[report]"``): it is imported
by :func:`require_plotly` when a report is made, so the rest of the collector
never needs it. Each figure carries ``layout.meta`` saying what it shows
(``kind``, and for the heat map the highlighted cells), which the page's tests
read in the browser.

Plotly draws its text (titles, tick labels, legend names, hover) from a subset
of HTML: ``<b>``, ``<br>``, ``<a href>``, entities. Every string here takes
plain text, store values included, and escapes it (:func:`_text`) before
Plotly sees it; only the markup this module adds is markup.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import TYPE_CHECKING, Any

from .focus import Focus
from .reads import segment_label

if TYPE_CHECKING:
    from plotly.graph_objects import Figure  # type: ignore[import-untyped]

__all__ = [
    "BASELINE",
    "HIGHLIGHT",
    "WINDOW",
    "PlotlyMissingError",
    "base_figure",
    "distribution_figure",
    "performance_figure",
    "plotly_text",
    "require_plotly",
    "series_figure",
    "volume_figure",
]

BASELINE = "#9a9a9a"
WINDOW = "#d62728"
HIGHLIGHT = "#0b3d91"
_FONT = {"family": "Liberation Sans, Helvetica, Arial, sans-serif", "size": 12}
# The legend goes below the plot, never over it: inside, it hid the drifted points
# at the end of the window the chart exists to show, and the shading's labels.
# At the figure's bottom edge (yref container), whatever the x axis's ticks take
# (a time axis has a second row, the date).
_LEGEND = {"orientation": "h", "x": 0, "xanchor": "left", "yref": "container", "y": 0,
           "yanchor": "bottom"}  # fmt: skip
_LEGEND_ROOM = 40  # pixels under the x axis's title for one row of legend
# The title sits just above the plot, below the band where Plotly's mode bar appears
# on hover (top right), so a long title is never drawn under the mode bar.
_TITLE = {"x": 0.01, "xanchor": "left", "yref": "paper", "y": 1, "yanchor": "bottom",
          "pad": {"b": 10}, "font": {"size": 15}}  # fmt: skip
_MARGIN = {"l": 60, "r": 20, "t": 70, "b": 50}


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


def base_figure(**layout: Any) -> Figure:
    """An empty figure in the report's style, with ``layout`` on top."""
    import plotly.graph_objects as go

    base = {"template": "plotly_white", "font": _FONT, "margin": _MARGIN, "title": _TITLE}
    figure = go.Figure()
    figure.update_layout(base)
    figure.update_layout(layout)
    return figure


def _with_legend_below(height: int, **layout: Any) -> Figure:
    """:func:`base_figure` of ``height`` plus room under the plot for the legend."""
    margin = {**_MARGIN, "b": _MARGIN["b"] + _LEGEND_ROOM}
    return base_figure(height=height + _LEGEND_ROOM, margin=margin, legend=_LEGEND, **layout)


def plotly_text(value: Any) -> str:
    """``value`` as text Plotly shows as it is (``<`` and ``&`` escaped; quotes are not
    markup there, and Plotly decodes only a few named entities)."""
    return html.escape(str(value), quote=False)


def distribution_figure(focus: Focus) -> Figure | None:
    """The finding's quantity in its segment: the window's distribution over the baseline's."""
    import plotly.graph_objects as go

    distribution, f = focus.distribution, focus.finding
    if distribution is None:
        return None
    segment = segment_label(f["segment_dim"], f["segment_value"])
    quantity = plotly_text(f["quantity"])
    figure = _with_legend_below(
        340,
        title={"text": f"{quantity} in {plotly_text(segment)}: window against baseline"},
        yaxis={"title": {"text": "share of calls"}, "tickformat": ".0%"},
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
        figure.update_xaxes(title={"text": quantity}, type="log" if bins.log_scale else "-")
    else:
        names, baseline, current = distribution.category_shares()
        categories = [plotly_text(n) for n in names]
        for name, shares, color in (("baseline", baseline, BASELINE), ("window", current, WINDOW)):
            figure.add_trace(go.Bar(x=categories, y=shares, name=name, marker_color=color))
        figure.update_layout(barmode="group", xaxis={"title": {"text": quantity}})
    return figure


def series_figure(focus: Focus) -> Figure | None:
    """The quantity over time in the segment (and in the whole model, unless the finding
    is on the whole model), the finding's baseline and window shaded."""
    import plotly.graph_objects as go

    series, f = focus.series, focus.finding
    if not series.times:
        return None
    segment = segment_label(f["segment_dim"], f["segment_value"])
    quantity = plotly_text(f["quantity"])
    minutes = series.step // 60
    figure = _with_legend_below(
        340,
        xaxis={"title": {"text": "time (UTC)"}},
        meta={"kind": "series", "segment": segment, "quantity": f["quantity"]},
    )
    if any(math.isfinite(m) for m in series.means):
        figure.update_layout(
            title={"text": f"{quantity} over time: mean per {minutes} min"},
            yaxis={"title": {"text": f"mean {quantity}"}},
        )
        figure.add_trace(
            go.Scatter(
                x=series.times,
                y=series.means,
                name=plotly_text(segment),
                mode="lines",
                line={"color": WINDOW, "width": 2},
            )
        )
        if f["segment_dim"] != "__all__":  # else the line above is the whole model's
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
            title={"text": f"{quantity} over time: share per {minutes} min"},
            yaxis={"title": {"text": "share of calls"}, "tickformat": ".0%"},
        )
        totals: dict[str, float] = {}
        for counts in series.categories:
            for name, calls in counts.items():
                totals[name] = totals.get(name, 0.0) + calls
        for name in sorted(totals, key=lambda n: -totals[n])[:5]:
            shares = [c.get(name, 0.0) / (sum(c.values()) or 1) for c in series.categories]
            figure.add_trace(
                go.Scatter(x=series.times, y=shares, name=plotly_text(name), mode="lines")
            )
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

    what = "the whole model" if dim == "__all__" else plotly_text(dim)
    figure = base_figure(
        title={"text": f"Calls per {step // 60} min: {what}"},
        height=300,
        xaxis={"title": {"text": "time (UTC)"}},
        yaxis={"title": {"text": "calls"}, "rangemode": "tozero"},
        meta={"kind": "volume", "dimension": dim},
    )
    for value, (times, calls) in series.items():
        figure.add_trace(
            go.Scatter(
                x=times, y=calls, mode="lines", name=plotly_text(value), showlegend=dim != "__all__"
            )
        )
    return figure


def performance_figure(label: str, kind: str, rows: list[dict[str, Any]], step: int) -> Figure:
    """One label's grade of the model over time (accuracy, or mean absolute error), with
    the labelled calls behind each point."""
    import plotly.graph_objects as go

    metric = "mean absolute error" if kind == "regression" else "accuracy"
    figure = _with_legend_below(
        320,
        title={"text": f"{plotly_text(label)}: {metric} per {step // 60} min of calls"},
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
