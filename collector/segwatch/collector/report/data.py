"""The report's reads: everything a page shows, read from the store as plain data.

Every read goes through a :data:`ReportQuery`, ``(sql, parameters) -> QueryResult``:
:func:`client_query` makes one of a clickhouse-connect client (a store this
process opened, a server, ``segwatch serve``'s door, or the collector's own
client behind ``GET /report``). The SQL lives in this folder's ``.sql`` files;
values go in as query parameters only. Nothing here writes: the heat map reads
the minute aggregates, not the detectors' roll-ups (which a run writes first).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.queries import QueryResult, run_query

from .distributions import Distribution, Period
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

ReportQuery = Callable[[str, Mapping[str, Any]], QueryResult]
"""Runs one of the report's queries with its parameters (a read; never a write)."""

MAX_FOCUS = 6
"""Findings shown up close (distribution and time series), the latest first."""


class UnknownModelError(ValueError):
    """The report was asked for a model the store has no calls of."""


def client_query(client: Client) -> ReportQuery:
    """The report's queries on ``client``."""
    return lambda sql, parameters: run_query(client, sql, parameters=dict(parameters))


@cache
def _sql(name: str) -> str:
    """This folder's ``name``, its ``/*@statistics*/`` marker filled with the detectors'
    shared statistics (sw_psi, sw_key_value, ...)."""
    text = resources.files(__package__).joinpath(name).read_text("utf-8")
    if "/*@statistics*/" in text:
        statistics = resources.files("segwatch.clickhouse.detectors").joinpath("statistics.sql")
        text = text.replace("/*@statistics*/", statistics.read_text("utf-8"))
    return text


def _rows(query: ReportQuery, name: str, **parameters: Any) -> list[dict[str, Any]]:
    values = {k: _utc_text(v) if isinstance(v, dt.datetime) else v for k, v in parameters.items()}
    result = query(_sql(name), values)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _utc(value: Any) -> dt.datetime:
    """A time as the store or the API hands it (datetime or ISO text), aware, UTC."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def segment_label(dim: str, value: str) -> str:
    """``feature.country=BR``; the whole model is ``__all__``."""
    return "__all__" if dim == "__all__" else f"{dim}={value}"


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
class Series:
    """A quantity over time in a segment and in the whole model (``step`` seconds apart)."""

    step: int
    times: list[dt.datetime]
    calls: list[float]
    means: list[float]
    categories: list[dict[str, float]]
    model_times: list[dt.datetime]
    model_means: list[float]


@dataclass(frozen=True)
class Focus:
    """One finding up close: its row, the distribution it compared, the quantity over time."""

    finding: dict[str, Any]
    distribution: Distribution | None
    series: Series


@dataclass(frozen=True)
class ModelReport:
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
    raises :class:`UnknownModelError` when the store has no such model.
    """
    settings = settings or DriftSettings.of()
    at = request.moment()
    if request.model is not None:
        known = [row["model_name"] for row in _rows(query, "known_models.sql")]
        if request.model not in known:
            have = f"it has {', '.join(known)}" if known else "it holds no model calls yet"
            raise UnknownModelError(f"unknown model {request.model!r}: {have}")
    start = at - dt.timedelta(seconds=request.since)
    models = _rows(query, "models.sql", start=start, end=at, model=request.model or "")
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
    first, last = _utc(row["first_minute"]), _utc(row["last_minute"])
    span = (last - first).total_seconds() + 60
    step = 300 if span <= 2 * 86400 else 3600
    series_start, series_end = floor_to(first, step), ceil_to(last + dt.timedelta(minutes=1), step)
    window_end = min(
        floor_to(at, settings.cadence), ceil_to(last + dt.timedelta(minutes=1), settings.cadence)
    )
    anomalies = _rows(query, "anomalies.sql", model=model, start=start)
    findings = _rows(query, "findings.sql", model=model, start=start, end=at)
    focus = [
        _focus(query, model, finding, series_start, series_end, step)
        for finding in _focus_findings(anomalies, findings)
    ]
    performance: list[dict[str, Any]] = []
    unread = 0
    if any(line.split("\t")[0] == model for line in labels.splitlines()):
        performance = _rows(
            query,
            "performance.sql",
            model=model,
            labels=labels,
            start=series_start,
            end=series_end,
            step=step,
        )
    if not performance:
        unread = int(query(_sql("labels_count.sql"), {"model": model}).rows[0][0])
    return ModelReport(
        name=model,
        calls=float(row["calls"]),
        first_minute=first,
        last_minute=last,
        anomalies=anomalies,
        findings=findings,
        grids=_drift_grids(query, model, window_end, settings),
        focus=focus,
        step=step,
        volume=_volume(query, model, series_start, series_end, step),
        performance=performance,
        unread_labels=unread,
    )


def _drift_grids(
    query: ReportQuery, model: str, window_end: dt.datetime, settings: DriftSettings
) -> list[DriftGrid]:
    """PSI of every segment and quantity in the latest window, one grid per version and stage."""
    window_start = window_end - dt.timedelta(seconds=settings.window)
    baseline_start = window_start - dt.timedelta(seconds=settings.baseline)
    rows = _rows(
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
    for r in rows:
        support, baseline_support = int(r["support"]), int(r["baseline_support"])
        grids.setdefault((r["model_version"], r["model_stage"]), []).append(
            DriftCell(
                r["segment_dim"],
                r["segment_value"],
                r["quantity"],
                float(r["psi"]),
                support,
                baseline_support,
                _number(r["baseline_mean"]),
                _number(r["current_mean"]),
                tested=min(support, baseline_support) >= settings.min_support,
            )
        )
    return [
        DriftGrid(version, stage, window_start, window_end, baseline_start, cells)
        for (version, stage), cells in grids.items()
    ]


def _number(value: Any) -> float:
    """A float from the store (NaN) or from JSON (None for NaN)."""
    return math.nan if value is None else float(value)


def _focus_findings(
    anomalies: list[dict[str, Any]], findings: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The findings to show up close: one per segment and quantity, the latest window's,
    those of open anomalies first; at most :data:`MAX_FOCUS`."""
    key = ("model_version", "model_stage", "segment_dim", "segment_value", "quantity")
    open_keys = {tuple(a[k] for k in key) for a in anomalies if a["state"] == "open"}
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for finding in findings:  # latest window first
        latest.setdefault(tuple(finding[k] for k in key), finding)
    ranked = sorted(latest.items(), key=lambda item: item[0] not in open_keys)
    return [finding for _, finding in ranked[:MAX_FOCUS]]


def _focus(
    query: ReportQuery,
    model: str,
    finding: dict[str, Any],
    start: dt.datetime,
    end: dt.datetime,
    step: int,
) -> Focus:
    where = {
        "model": model,
        "version": finding["model_version"],
        "stage": finding["model_stage"],
        "dim": finding["segment_dim"],
        "value": finding["segment_value"],
        "quantity": finding["quantity"],
    }
    periods = {
        bool(r["is_current"]): Period(
            [float(v) for v in r["bucket_values"]],
            [float(n) for n in r["bucket_calls"]],
            {
                str(k): float(v)
                for k, v in zip(r["category_names"], r["category_calls"], strict=True)
            },
            float(r["missing_calls"]),
            float(r["calls"]),
        )
        for r in _rows(
            query,
            "distribution.sql",
            **where,
            window_start=_utc(finding["window_start"]),
            window_end=_utc(finding["window_end"]),
            baseline_start=_utc(finding["baseline_start"]),
            baseline_end=_utc(finding["baseline_end"]),
        )
    }
    distribution = None
    if periods:
        distribution = Distribution(
            str(finding["quantity"]), periods.get(False, Period()), periods.get(True, Period())
        )
    rows = _rows(query, "series.sql", **where, start=start, end=end, step=step)
    own = [r for r in rows if not r["whole_model"]]
    whole = [r for r in rows if r["whole_model"]]
    series = Series(
        step,
        [_utc(r["t"]) for r in own],
        [float(r["calls"]) for r in own],
        [_number(r["mean"]) for r in own],
        [{str(k): float(v) for k, v in dict(r["cats"]).items()} for r in own],
        [_utc(r["t"]) for r in whole],
        [_number(r["mean"]) for r in whole],
    )
    return Focus(finding, distribution, series)


def _volume(
    query: ReportQuery, model: str, start: dt.datetime, end: dt.datetime, step: int
) -> dict[str, dict[str, tuple[list[dt.datetime], list[float]]]]:
    """Calls per ``step`` of every segment, by dimension (the whole model under ``__all__``)."""
    volume: dict[str, dict[str, tuple[list[dt.datetime], list[float]]]] = {}
    for r in _rows(query, "volume.sql", model=model, start=start, end=end, step=step):
        times, calls = volume.setdefault(r["segment_dim"], {}).setdefault(
            r["segment_value"], ([], [])
        )
        times.append(_utc(r["t"]))
        calls.append(float(r["calls"]))
    return volume
