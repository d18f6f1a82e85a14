"""The report's reads: everything a page shows, read from the store as plain data.

Every read goes through a :data:`~.reads.ReportQuery` (:mod:`.reads`: the SQL
files, parameters, the read budget). Nothing here writes: the heat map reads
the minute aggregates, not the detectors' roll-ups (which a run writes first).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .focus import Focus, Series, choose_focus, read_focus
from .reads import ReportQuery, client_query, number, rows, segment_label, utc
from .request import DriftSettings, ReportRequest, ceil_to, floor_to

__all__ = [
    "DriftCell",
    "DriftGrid",
    "Focus",
    "ModelReport",
    "Report",
    "ReportQuery",
    "Series",
    "UnknownModelError",
    "client_query",
    "read_report",
    "segment_label",
]

_STEPS = (300, 3600, 6 * 3600, 86400)
_MAX_POINTS = 800  # per series: the step is the first of _STEPS that keeps under it


class UnknownModelError(ValueError):
    """The report was asked for a model the store has no calls of."""


@dataclass(frozen=True)
class DriftCell:
    """PSI of one quantity in one segment; ``tested``: both windows had ``min_support`` calls."""

    dim: str
    value: str
    quantity: str
    psi: float
    support: int
    baseline_support: int
    baseline_mean: float
    current_mean: float
    tested: bool

    @property
    def segment(self) -> str:
        return segment_label(self.dim, self.value)


@dataclass(frozen=True)
class DriftGrid:
    """Every segment × quantity of one model version and stage, window against baseline."""

    version: str
    stage: str
    window_start: dt.datetime
    window_end: dt.datetime
    baseline_start: dt.datetime
    cells: list[DriftCell]

    @property
    def segments(self) -> list[str]:
        return list(dict.fromkeys(c.segment for c in self.cells))

    @property
    def quantities(self) -> list[str]:
        return sorted({c.quantity for c in self.cells})

    def cell(self, segment: str, quantity: str) -> DriftCell | None:
        return next((c for c in self.cells if (c.segment, c.quantity) == (segment, quantity)), None)


@dataclass(frozen=True)
class ModelReport:
    """One model's part of the page.

    ``anomalies``: the first 100 (by incident, open incidents first), of
    ``anomalies_total``, of which ``open_anomalies`` are open, in
    ``open_incidents`` incidents; ``findings``: the latest 50 of the period's
    ``findings_total``; ``latest_findings``: each detector's latest finding per
    segment and quantity (the period's, and every open anomaly's), which the heat
    map frames; ``focus``: those drawn up close, ``left_out``: those past
    :data:`~.focus.MAX_FOCUS`, named on the page.
    """

    name: str
    calls: float
    first_minute: dt.datetime
    last_minute: dt.datetime
    anomalies: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    grids: list[DriftGrid]
    focus: list[Focus]
    step: int
    volume: dict[str, dict[str, tuple[list[dt.datetime], list[float]]]]
    performance: list[dict[str, Any]] = field(default_factory=list)
    unread_labels: int = 0  # labels stored for the model that no configured label grades
    anomalies_total: int = 0
    open_anomalies: int = 0
    open_incidents: int = 0
    findings_total: int = 0
    latest_findings: list[dict[str, Any]] = field(default_factory=list)
    left_out: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    generated_at: dt.datetime
    since: int
    store: str
    settings: DriftSettings
    models: list[ModelReport]


def read_report(
    query: ReportQuery,
    request: ReportRequest,
    settings: DriftSettings | None = None,
    labels: str = "",
    store: str = "",
) -> Report:
    """Read what the report shows of ``request``'s models over its period.

    ``labels`` are the performance detector's label lines (the config's labels);
    raises :class:`UnknownModelError` when the store has no such model, and
    :class:`~.reads.ReportBudgetError` when ``query``'s budget runs out.
    """
    settings = settings or DriftSettings.of()
    at = request.moment()
    if request.model is not None:
        known = [row["model_name"] for row in rows(query, "known_models.sql")]
        if request.model not in known:
            have = f"it has {', '.join(known)}" if known else "it holds no model calls yet"
            raise UnknownModelError(f"unknown model {request.model!r}: {have}")
    start = at - dt.timedelta(seconds=request.since)
    models = rows(query, "models.sql", start=start, end=at, model=request.model or "")
    return Report(
        at,
        request.since,
        store,
        settings,
        [_model_report(query, row, at, start, settings, labels) for row in models],
    )


def _model_report(
    query: ReportQuery,
    row: dict[str, Any],
    at: dt.datetime,
    start: dt.datetime,
    settings: DriftSettings,
    labels: str,
) -> ModelReport:
    model = str(row["model_name"])
    first, last = utc(row["first_minute"]), utc(row["last_minute"])
    span = (last - first).total_seconds() + 60
    step = next((s for s in _STEPS if span / s <= _MAX_POINTS), _STEPS[-1])
    series_start, series_end = floor_to(first, step), ceil_to(last + dt.timedelta(minutes=1), step)
    window_end = min(
        floor_to(at, settings.cadence), ceil_to(last + dt.timedelta(minutes=1), settings.cadence)
    )
    anomalies, anomaly_totals = _counted(rows(query, "anomalies.sql", model=model, start=start))
    findings, finding_totals = _counted(
        rows(query, "findings.sql", model=model, start=start, end=at)
    )
    latest = rows(query, "focus_findings.sql", model=model, start=start, end=at)
    choice = choose_focus(anomalies, latest)
    performance, unread = _performance(query, model, labels, series_start, series_end, step)
    return ModelReport(
        name=model,
        calls=float(row["calls"]),
        first_minute=first,
        last_minute=last,
        anomalies=anomalies,
        findings=findings,
        grids=_drift_grids(query, model, window_end, settings),
        focus=[
            read_focus(query, model, finding, series_start, series_end, step)
            for finding in choice.shown
        ],
        step=step,
        volume=_volume(query, model, series_start, series_end, step),
        performance=performance,
        unread_labels=unread,
        anomalies_total=anomaly_totals.get("total", 0),
        open_anomalies=anomaly_totals.get("open_total", 0),
        open_incidents=anomaly_totals.get("open_incidents", 0),
        findings_total=finding_totals.get("total", 0),
        latest_findings=latest,
        left_out=choice.left_out,
    )


def _counted(found: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows that carry their query's totals (``total``, ``open_total``, ``open_incidents``:
    window counts taken
    before its LIMIT) as the rows without them, and the totals (none without rows)."""
    names = ("total", "open_total", "open_incidents")
    totals = {name: int(found[0][name]) for name in names if found and name in found[0]}
    return [{k: v for k, v in r.items() if k not in names} for r in found], totals


def _performance(
    query: ReportQuery,
    model: str,
    labels: str,
    start: dt.datetime,
    end: dt.datetime,
    step: int,
) -> tuple[list[dict[str, Any]], int]:
    """The model's graded labels per ``step`` (when the config grades any of its labels),
    else how many labels it has that nothing grades."""
    if any(line.split("\t")[0] == model for line in labels.splitlines()):
        graded = rows(
            query, "performance.sql", model=model, labels=labels, start=start, end=end, step=step
        )
        if graded:
            return graded, 0
    (count,) = rows(query, "labels_count.sql", model=model)
    return [], int(next(iter(count.values())))


def _drift_grids(
    query: ReportQuery, model: str, window_end: dt.datetime, settings: DriftSettings
) -> list[DriftGrid]:
    """PSI of every segment and quantity in the latest window, one grid per version and stage."""
    window_start = window_end - dt.timedelta(seconds=settings.window)
    baseline_start = window_start - dt.timedelta(seconds=settings.baseline)
    found = rows(
        query,
        "drift_grid.sql",
        model=model,
        window_start=window_start,
        window_end=window_end,
        baseline_start=baseline_start,
        baseline_end=window_start,
        bins=settings.bins,
    )
    grids: dict[tuple[str, str], list[DriftCell]] = {}
    for r in found:
        support, baseline_support = int(r["support"]), int(r["baseline_support"])
        grids.setdefault((r["model_version"], r["model_stage"]), []).append(
            DriftCell(
                r["segment_dim"],
                r["segment_value"],
                r["quantity"],
                float(r["psi"]),
                support,
                baseline_support,
                number(r["baseline_mean"]),
                number(r["current_mean"]),
                tested=min(support, baseline_support) >= settings.min_support,
            )
        )
    return [
        DriftGrid(version, stage, window_start, window_end, baseline_start, cells)
        for (version, stage), cells in grids.items()
    ]


def _volume(
    query: ReportQuery, model: str, start: dt.datetime, end: dt.datetime, step: int
) -> dict[str, dict[str, tuple[list[dt.datetime], list[float]]]]:
    """Calls per ``step`` of every segment, by dimension (the whole model under ``__all__``)."""
    volume: dict[str, dict[str, tuple[list[dt.datetime], list[float]]]] = {}
    for r in rows(query, "volume.sql", model=model, start=start, end=end, step=step):
        times, calls = volume.setdefault(r["segment_dim"], {}).setdefault(
            r["segment_value"], ([], [])
        )
        times.append(utc(r["t"]))
        calls.append(float(r["calls"]))
    return volume
