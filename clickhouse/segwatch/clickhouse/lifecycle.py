"""What a detector run's findings mean: the most specific culprit, open and resolved.

A detector run finds anomalies per segment, quantity and window
(``ml_anomalies``). Two steps turn those findings into alerts people trust:

* :func:`most_specific` — one alert for a parent segment and its crosses: when
  ``country=BR`` and ``country×device=BR × ios`` are both found for the same
  quantity, the cross is kept if it alone is found in BR and scores higher (the
  change is concentrated there), the parent otherwise (the change spans the
  parent; its crosses only share it).
* :func:`update_lifecycle` — persistence and the open → resolved lifecycle: an
  anomaly opens when its key was found in at least ``found`` of the detector's
  last ``windows`` windows, and resolves once it was found in none of them.
  Each transition is a row of ``ml_anomaly_events``; running a window again
  replaces its transitions (same key and window), never adds to them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

__all__ = [
    "EVENT_COLUMNS",
    "FINDING_COLUMNS",
    "KEY_COLUMNS",
    "Persistence",
    "cross_parents",
    "most_specific",
    "opened_transition",
    "segment_text",
    "sql_time",
    "update_lifecycle",
    "utc",
]

KEY_COLUMNS = (
    "detector",
    "model_name",
    "model_version",
    "model_stage",
    "segment_dim",
    "segment_value",
    "quantity",
)
"""What identifies one anomaly across windows."""

EVENT_COLUMNS = (
    "state",
    *KEY_COLUMNS,
    "window_start",
    "window_end",
    "score",
    "threshold",
    "p_value",
    "support",
    "exemplar_trace_ids",
    "details",
    "statistics",
)
"""The columns of ``ml_anomaly_events`` a transition fills (``recorded_at`` is added)."""

FINDING_COLUMNS = (
    *KEY_COLUMNS,
    "window_start",
    "window_end",
    "baseline_start",
    "baseline_end",
    "score",
    "threshold",
    "p_value",
    "support",
    "baseline_support",
    "baseline_value",
    "current_value",
    "exemplar_trace_ids",
    "details",
    "statistics",
)
"""The columns of ``ml_anomalies``, every detector's findings (the detector contract), which
an ``open`` transition is made from."""

_Key = tuple[Any, ...]
"""One anomaly's values of :data:`KEY_COLUMNS`."""


_CROSS = "×"  # segment dimensions of crosses: "feature.country×feature.device"
_CROSS_VALUE = " × "  # their values: "BR × ios"


@dataclass(frozen=True)
class Persistence:
    """Open an anomaly once found in ``found`` of the last ``windows`` windows."""

    found: int = 1
    windows: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.found <= self.windows <= 100:
            raise ValueError(
                "persistence needs 1 <= found <= windows <= 100, "
                f"not {self.found} of {self.windows}"
            )


def cross_parents(segment_dim: str, segment_value: str) -> list[tuple[str, str]]:
    """The (dimension, value) segments a cross segment lies in; none for a plain one."""
    dims = str(segment_dim).split(_CROSS)
    values = str(segment_value).split(_CROSS_VALUE)
    if len(dims) < 2 or len(dims) != len(values):
        return []
    return list(zip(dims, values, strict=True))


def most_specific(findings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The findings with one per parent-and-crosses family, the most specific culprit.

    A cross and a parent are one family when the cross's segment lies in the
    parent's and both are about the same detector, model and quantity. When
    several crosses of one cross dimension are found inside a parent found too
    (``BR × ios`` and ``BR × web`` with ``BR``), the change spans the parent:
    the parent is kept. A single cross is kept over its parent only when it
    scores higher (the change is concentrated there). The one kept names the
    others in its ``details``.
    """

    def family(f: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(f[k] for k in KEY_COLUMNS if k not in ("segment_dim", "segment_value"))

    by_segment = {(family(f), f["segment_dim"], f["segment_value"]): f for f in findings}
    inside: dict[tuple[Any, ...], list[dict[str, Any]]] = {}  # crosses found in a found parent
    for finding in findings:
        for dim, value in cross_parents(finding["segment_dim"], finding["segment_value"]):
            if (family(finding), dim, value) in by_segment:
                key = (family(finding), dim, value, finding["segment_dim"])
                inside.setdefault(key, []).append(finding)
    dropped: set[int] = set()
    for (fam, dim, value, _), crosses in inside.items():
        parent = by_segment[(fam, dim, value)]
        crosses = [c for c in crosses if id(c) not in dropped]
        if id(parent) in dropped or not crosses:
            continue
        if len(crosses) == 1 and crosses[0]["score"] > parent["score"]:
            _fold(keep=crosses[0], drop=[parent], dropped=dropped)
        else:
            _fold(keep=parent, drop=crosses, dropped=dropped)
    return [f for f in findings if id(f) not in dropped]


def _fold(keep: dict[str, Any], drop: list[dict[str, Any]], dropped: set[int]) -> None:
    for other in drop:
        dropped.add(id(other))
        keep["details"] = (
            f"{keep['details']}; also seen in {other['segment_dim']}={other['segment_value']} "
            f"(score {other['score']:.3g})"
        )


def update_lifecycle(
    client: Client,
    detector: str,
    window_start: dt.datetime,
    window_end: dt.datetime,
    cadence: int,
    persistence: Persistence,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Record the anomalies of ``detector`` that open or resolve at ``window_end``.

    Reads the findings of the last ``persistence.windows`` windows (ends a
    ``cadence`` apart) and each key's state before this window; returns the
    transitions it recorded: (opened, resolved).
    """
    since = window_end - dt.timedelta(seconds=cadence * persistence.windows)
    found = _recent_findings(client, detector, since, window_end)
    open_now, decided = _states_before(client, detector, window_end)
    window = {"window_start": window_start, "window_end": window_end}
    opened = [
        opened_transition(findings[-1], window)
        for key, findings in found.items()
        if key not in open_now
        and key not in decided
        and len({f["window_end"] for f in findings}) >= persistence.found
    ]
    resolved = [
        _resolution(key, last, window, f"the last {persistence.windows} window(s) of {detector}")
        for key, last in open_now.items()
        if key not in found and key not in decided
    ]
    transitions = opened + resolved
    if transitions:
        recorded_at = dt.datetime.now(dt.timezone.utc)
        client.insert(
            "ml_anomaly_events",
            [[recorded_at, *(t[c] for c in EVENT_COLUMNS)] for t in transitions],
            column_names=["recorded_at", *EVENT_COLUMNS],
        )
    return opened, resolved


def opened_transition(finding: dict[str, Any], window: dict[str, dt.datetime]) -> dict[str, Any]:
    """The ``open`` transition at ``window`` (its start and end) of the anomaly whose latest
    finding is ``finding`` (a row of :data:`FINDING_COLUMNS`). The window the finding was
    found in is kept apart (``found_window_start``, ``found_window_end``): the run that
    opened it may have found nothing itself (k of n windows)."""
    found_in = {"found_window_start": finding["window_start"],
                "found_window_end": finding["window_end"]}  # fmt: skip
    return {**finding, **found_in, **window, "state": "open"}


def _recent_findings(
    client: Client, detector: str, since: dt.datetime, window_end: dt.datetime
) -> dict[_Key, list[dict[str, Any]]]:
    """The findings of windows ending in (``since``, ``window_end``], by key, oldest first."""
    recent = client.query(
        f"SELECT {', '.join(FINDING_COLUMNS)} FROM ml_anomalies FINAL "
        "WHERE detector = {detector:String} AND window_end > {since:DateTime('UTC')} "
        "AND window_end <= {window_end:DateTime('UTC')} ORDER BY window_end",
        parameters={
            "detector": detector,
            "since": sql_time(since),
            "window_end": sql_time(window_end),
        },
    )
    found: dict[_Key, list[dict[str, Any]]] = {}
    for row in recent.result_rows:
        finding = dict(zip(recent.column_names, row, strict=True))
        found.setdefault(tuple(finding[k] for k in KEY_COLUMNS), []).append(finding)
    return found


def _states_before(
    client: Client, detector: str, window_end: dt.datetime
) -> tuple[dict[_Key, tuple[Any, ...]], set[_Key]]:
    """(the keys open before this window, with their last figures; the keys decided at it).

    A key with a transition at ``window_end`` already is a rerun of this window:
    it is decided, neither opened nor resolved again.
    """
    keys = ", ".join(KEY_COLUMNS)
    latest = client.query(
        f"SELECT {keys}, argMax(state, window_end), max(window_end), "
        "argMax((score, threshold, p_value, support, exemplar_trace_ids, statistics), window_end) "
        "FROM ml_anomaly_events FINAL "
        "WHERE detector = {detector:String} AND window_end <= {window_end:DateTime('UTC')} "
        f"GROUP BY {keys}",
        parameters={"detector": detector, "window_end": sql_time(window_end)},
    )
    open_now: dict[_Key, tuple[Any, ...]] = {}
    decided: set[_Key] = set()
    n = len(KEY_COLUMNS)
    for row in latest.result_rows:
        key, state, last_end, last = tuple(row[:n]), row[n], row[n + 1], row[n + 2]
        if utc(last_end) == window_end:
            decided.add(key)
        elif state == "open":
            open_now[key] = last
    return open_now, decided


def _resolution(
    key: _Key, last: tuple[Any, ...], window: dict[str, dt.datetime], unseen_in: str
) -> dict[str, Any]:
    """The ``resolved`` transition of an open anomaly, with the figures it was last open with."""
    score, threshold, p_value, support, exemplars, statistics = last
    found = dict(zip(KEY_COLUMNS, key, strict=True))
    return {
        **found, **window, "state": "resolved",
        "score": score, "threshold": threshold, "p_value": p_value, "support": support,
        "exemplar_trace_ids": exemplars, "statistics": statistics,
        "details": f"{found['quantity']} for "
                   f"{segment_text(found['segment_dim'], found['segment_value'])} resolved: "
                   f"not found in {unseen_in}",
    }  # fmt: skip


def sql_time(moment: dt.datetime) -> str:
    """A UTC datetime as a ``DateTime('UTC')`` query parameter's text."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def utc(moment: dt.datetime) -> dt.datetime:
    """The engine returns naive UTC datetimes; make them comparable with aware ones."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def segment_text(dim: str, value: str) -> str:
    """``feature.country=BR``, or ``the whole model``."""
    return "the whole model" if dim == "__all__" else f"{dim}={value}"
