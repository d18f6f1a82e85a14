"""The findings the report shows up close: which, and what it reads for each.

Every segment and quantity with a finding in the period, or with an open
anomaly, gets its distribution (the window against its baseline) and its time
series, those of open anomalies first (each incident's root before its consequences),
then the latest; past
:data:`MAX_FOCUS` the rest are named on the page, not drawn (:class:`FocusChoice`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .distributions import Distribution, Period
from .reads import ReportQuery, number, rows, utc

__all__ = ["MAX_FOCUS", "Focus", "FocusChoice", "Series", "choose_focus", "read_focus"]

MAX_FOCUS = 30
"""Segments and quantities drawn up close (two plots each) on one model's page; the
page names those past it, so a model drifting everywhere still makes a page a
browser opens quickly."""

_KEY = ("model_version", "model_stage", "segment_dim", "segment_value", "quantity")


@dataclass(frozen=True)
class Series:
    """A quantity over time in a segment and in the whole model (``step`` seconds apart).

    For a finding on the whole model, the segment's series is the whole model's.
    """

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
class FocusChoice:
    """The findings to draw (one per segment and quantity) and those left out past the cap."""

    shown: list[dict[str, Any]] = field(default_factory=list)
    left_out: list[dict[str, Any]] = field(default_factory=list)


def choose_focus(
    anomalies: list[dict[str, Any]], findings: list[dict[str, Any]], cap: int = MAX_FOCUS
) -> FocusChoice:
    """One finding per segment and quantity (the latest: ``findings`` come latest first),
    those of open anomalies first, in the order of ``anomalies`` (by incident, its root
    first: the cause is drawn before what follows from it); the first ``cap`` shown, the
    rest left out."""
    open_rank: dict[tuple[Any, ...], int] = {}
    for rank, anomaly in enumerate(a for a in anomalies if a["state"] == "open"):
        open_rank.setdefault(tuple(anomaly[k] for k in _KEY), rank)
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for finding in findings:
        latest.setdefault(tuple(finding[k] for k in _KEY), finding)
    unranked = len(open_rank)
    ranked = sorted(latest.items(), key=lambda item: open_rank.get(item[0], unranked))  # stable
    chosen = [finding for _, finding in ranked]
    return FocusChoice(chosen[:cap], chosen[cap:])


def read_focus(
    query: ReportQuery,
    model: str,
    finding: dict[str, Any],
    start: dt.datetime,
    end: dt.datetime,
    step: int,
) -> Focus:
    """``finding``'s distribution in its window and baseline, and its quantity from
    ``start`` to ``end`` per ``step`` seconds."""
    where = {
        "model": model,
        "version": finding["model_version"],
        "stage": finding["model_stage"],
        "dim": finding["segment_dim"],
        "value": finding["segment_value"],
        "quantity": finding["quantity"],
    }
    return Focus(
        finding, _distribution(query, where, finding), _series(query, where, start, end, step)
    )


def _distribution(
    query: ReportQuery, where: dict[str, Any], finding: dict[str, Any]
) -> Distribution | None:
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
        for r in rows(
            query,
            "distribution.sql",
            **where,
            window_start=utc(finding["window_start"]),
            window_end=utc(finding["window_end"]),
            baseline_start=utc(finding["baseline_start"]),
            baseline_end=utc(finding["baseline_end"]),
        )
    }
    if not periods:
        return None
    return Distribution(
        str(finding["quantity"]), periods.get(False, Period()), periods.get(True, Period())
    )


def _series(
    query: ReportQuery, where: dict[str, Any], start: dt.datetime, end: dt.datetime, step: int
) -> Series:
    found = rows(query, "series.sql", **where, start=start, end=end, step=step)
    own = [r for r in found if r["own"]]
    whole = [r for r in found if r["whole_model"]]
    return Series(
        step,
        [utc(r["t"]) for r in own],
        [float(r["calls"]) for r in own],
        [number(r["mean"]) for r in own],
        [{str(k): float(v) for k, v in dict(r["cats"]).items()} for r in own],
        [utc(r["t"]) for r in whole],
        [number(r["mean"]) for r in whole],
    )
