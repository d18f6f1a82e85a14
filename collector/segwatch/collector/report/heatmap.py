"""The drift heat map: every segment × quantity of a model version, PSI of the window
against its baseline, the cells with findings framed (see :mod:`.figures` on text)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .data import DriftGrid
from .figures import HIGHLIGHT, base_figure, plotly_text
from .reads import segment_label
from .request import DriftSettings

if TYPE_CHECKING:
    from plotly.graph_objects import Figure  # type: ignore[import-untyped]

__all__ = ["drift_heatmap"]

_PSI_CAP = 1.0  # PSI at or above this is the darkest red (0.25 is "large" by convention)


def _findings_in(grid: DriftGrid, findings: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(segment, quantity) → the findings' sentences (escaped, as hover text), for the
    grid's version and stage."""
    marked: dict[tuple[str, str], list[str]] = {}
    for f in findings:
        if (f["model_version"], f["model_stage"]) != (grid.version, grid.stage):
            continue
        key = (segment_label(f["segment_dim"], f["segment_value"]), f["quantity"])
        if key[0] in grid.segments and key[1] in grid.quantities:
            marked.setdefault(key, []).append(plotly_text(f"{f['detector']}: {f['details']}"))
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
    are framed, and their segments' labels bold. ``title`` is plain text.
    """
    segments, quantities = grid.segments, grid.quantities
    marked = _findings_in(grid, findings)
    rows, columns = [plotly_text(s) for s in segments], [plotly_text(q) for q in quantities]
    figure = base_figure(
        # Its x axis is on top, so the title stays at the top of the figure, under the
        # band where the mode bar appears on hover.
        title={
            "text": plotly_text(title),
            "yref": "container",
            "y": 1,
            "yanchor": "top",
            "pad": {"t": 34, "b": 0},
        },
        height=160 + 26 * len(segments),
        xaxis={"title": {"text": "quantity"}, "side": "top", "tickangle": 0},
        yaxis={
            "title": {"text": "segment"},
            "autorange": "reversed",
            "tickvals": rows,
            "ticktext": [
                f"<b>{row}</b>" if any(k[0] == s for k in marked) else row
                for s, row in zip(segments, rows, strict=True)
            ],
        },
        margin={"l": 260, "r": 20, "t": 110, "b": 20},
        meta={"kind": "heatmap", "highlighted": [f"{s}|{q}" for s, q in marked]},
    )
    hover = [[_cell_hover(grid, s, q, marked.get((s, q))) for q in quantities] for s in segments]
    cells = [[grid.cell(s, q) for q in quantities] for s in segments]
    for tested in (True, False):  # the tested cells in colour, the others grey
        psi = [[c.psi if c is not None and c.tested == tested else None for c in r] for r in cells]
        _add_psi_layer(figure, psi, columns, rows, hover, tested, settings)
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


def _add_psi_layer(
    figure: Figure,
    psi: list[list[float | None]],
    columns: list[str],
    rows: list[str],
    hover: list[list[str]],
    tested: bool,
    settings: DriftSettings,
) -> None:
    """One Heatmap trace of the grid's cells (None: drawn by the other layer): the tested
    cells on the PSI colour scale with its colour bar, or the untested ones in grey."""
    import plotly.graph_objects as go  # type: ignore[import-untyped]

    scale: dict[str, Any] = {
        "colorscale": "YlOrRd",
        "colorbar": {"title": {"text": "PSI"}, "len": min(1.0, 300 / (26 * len(rows) + 1))},
    }
    if not tested:
        scale = {"colorscale": [[0, "#f2f2f2"], [1, "#bdbdbd"]], "showscale": False}
    figure.add_trace(
        go.Heatmap(
            z=psi,
            x=columns,
            y=rows,
            text=[["" if v is None else f"{v:.2f}" for v in row] for row in psi],
            texttemplate="%{text}",
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            zmin=0,
            zmax=_PSI_CAP,
            xgap=2,
            ygap=2,
            name="PSI" if tested else f"under {settings.min_support} calls: not tested",
            **scale,
        )
    )


def _cell_hover(grid: DriftGrid, segment: str, quantity: str, finding: str | None) -> str:
    """The cell's hover text; ``finding`` is already escaped."""
    cell = grid.cell(segment, quantity)
    if cell is None:
        return f"{plotly_text(segment)}<br>{plotly_text(quantity)}: not measured in this segment"
    lines = [
        f"<b>{plotly_text(segment)}</b> · {plotly_text(quantity)}",
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
