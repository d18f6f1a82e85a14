"""Running the detectors on demand: ``segwatch detect`` (now, ``--at``, or over a range of
history: ``--from``/``--to``), the API's ``/detect``, the demo.

Light on purpose (the engine's runner and a result table, nothing of the
collector's pipeline): every CLI command imports it.

What a run prints has to explain itself: the table holds the run's new
*findings* (``ml_anomalies``), each under the detector that reported it (a
spec such as ``data_quality`` reports as ``data_missing``, ``data_range`` and
``data_categories``), and :meth:`DetectionResult.summary` says which window
each detector evaluated and that a finding opens an *anomaly*
(``ml_anomaly_events``, what ``segwatch anomalies`` lists) only once it
persists: found in k of the detector's last n windows (its manifest's or the
config's ``persistence``).

:func:`detect_range` replays history: every detector's every cadence window
whose end falls in the range, in time order (detectors interleaved, as the
scheduler would have run them; the windows of one moment as one group, as the
scheduler's turn), through the same
:func:`~segwatch.clickhouse.detection.run_detector_group`, so persistence opens
and resolves anomalies as it would have live. Running a range again adds nothing.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.detection import (
    DetectorRun,
    DetectorSpec,
    load_manifest,
    run_detector_group,
    run_detectors,
)
from segwatch.clickhouse.queries import QueryResult, open_anomaly_counts

__all__ = ["MAX_RANGE", "DetectionResult", "RangeResult", "detect_range", "detect_table",
           "range_windows"]  # fmt: skip

MAX_RANGE = dt.timedelta(days=31)
"""The longest range ``detect_range`` runs: a month of history (at a 5-minute cadence,
about 9,000 windows per detector)."""

COLUMNS = [
    "detector",
    "model",
    "version",
    "segment",
    "quantity",
    "score",
    "threshold",
    "support",
    "exemplar_trace_id",
]
"""The columns of the findings table, one row per new finding."""


@dataclass(frozen=True)
class DetectionResult(QueryResult):
    """A detector run's new findings, and what each detector evaluated (``runs``).

    Each entry of ``runs`` is JSON as ``--json`` and the API give it:
    ``detector`` (the manifest's name), ``reports_as`` (the detector names its
    rows carry), ``window_start`` / ``window_end`` (ISO 8601, UTC),
    ``persistence`` (``{"found": k, "windows": n}``), and the counts
    ``findings``, ``opened``, ``resolved`` and ``incidents`` (the incidents the
    anomalies that opened opened: the others joined one already open).
    """

    runs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "runs": self.runs}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DetectionResult:
        table = QueryResult.from_json(data)
        return cls(table.columns, table.rows, [dict(r) for r in data.get("runs", [])])

    def summary(self) -> list[str]:
        """Lines for people: each window evaluated (detectors that share one, once), then
        how many findings, and when a finding becomes an anomaly (k of n windows)."""
        if not self.runs:
            return ["no detector ran: the config disables every one"]
        # The rule most detectors share is said once, at the end; the others beside them.
        usual = Counter(_persistence(run) for run in self.runs).most_common(1)[0][0]
        groups: dict[tuple[str, str], list[str]] = {}
        for run in self.runs:
            reports = [name for name in run["reports_as"] if name != run["detector"]]
            named = f"{run['detector']} ({', '.join(reports)})" if reports else run["detector"]
            if _persistence(run) != usual:
                named += f" (opens once {_persistence(run)})"
            groups.setdefault((run["window_start"], run["window_end"]), []).append(named)
        lines = ["windows evaluated (UTC):"]
        lines += [f"  {_span(*window)}  {', '.join(names)}" for window, names in groups.items()]
        findings, opened, resolved = (len(self.rows), sum(run["opened"] for run in self.runs),
                                      sum(run["resolved"] for run in self.runs))  # fmt: skip
        incidents = sum(run.get("incidents", 0) for run in self.runs)
        lines.append(
            f"{findings} new finding{'' if findings == 1 else 's'}; a finding opens an anomaly "
            f"once {usual}: {opened} opened ({_incidents(incidents)}), {resolved} resolved "
            "('segwatch anomalies' lists them by incident, 'segwatch anomalies --findings' "
            "every finding)"
        )
        return lines


def _persistence(run: dict[str, Any]) -> str:
    """``found in 2 of its last 3 windows``."""
    persistence = run["persistence"]
    return f"found in {persistence['found']} of its last {persistence['windows']} windows"


def _span(start: str, end: str) -> str:
    """``2026-12-06 07:35–07:50`` (the date once when both ends share it)."""
    first, last = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
    if first.date() == last.date():
        return f"{first:%Y-%m-%d %H:%M}–{last:%H:%M}"
    return f"{first:%Y-%m-%d %H:%M}–{last:%Y-%m-%d %H:%M}"


def detect_table(
    client: Client,
    at: dt.datetime | None,
    specs: list[DetectorSpec] | None = None,
    helpers: Sequence[Client] = (),
) -> DetectionResult:
    """Run the detectors (``specs``, default the manifest's) now, as a group on ``client``
    and ``helpers``; tabulate the new findings and what each detector evaluated."""
    chosen = load_manifest() if specs is None else specs
    runs = run_detectors(client, at, chosen, helpers)
    rows: list[list[Any]] = []
    evaluated: list[dict[str, Any]] = []
    for spec, run in zip(chosen, runs, strict=True):
        for a in run.new_anomalies:
            rows.append(
                [
                    a["detector"],  # the row's own: data_quality reports as data_range, ...
                    a["model_name"],
                    a["model_version"],
                    f"{a['segment_dim']}={a['segment_value']}",
                    a["quantity"],
                    round(float(a["score"]), 4),
                    a["threshold"],
                    a["support"],
                    (a["exemplar_trace_ids"] or [""])[0],
                ]
            )
        evaluated.append({
            "detector": spec.name,
            "reports_as": list(spec.detectors),
            "window_start": run.window_start.isoformat(),
            "window_end": run.window_end.isoformat(),
            "persistence": {"found": spec.persistence.found,
                            "windows": spec.persistence.windows},
            "findings": len(run.new_anomalies),
            "opened": len(run.opened),
            "resolved": len(run.resolved),
            "incidents": incidents_opened(run),
        })  # fmt: skip
    return DetectionResult(list(COLUMNS), rows, evaluated)


def incidents_opened(run: DetectorRun) -> int:
    """The incidents a run's anomalies opened (the others joined an open one)."""
    return sum(1 for t in run.opened if t.get("incident_alert"))


def _counted(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _incidents(count: int) -> str:
    return _counted(count, "new incident", "new incidents")


RANGE_COLUMNS = ["detector", "windows", "first_window_end", "last_window_end", "findings",
                 "opened", "incidents", "resolved"]  # fmt: skip
"""The columns of a range run's table, one row per detector."""


@dataclass(frozen=True)
class RangeResult(QueryResult):
    """What a range run did, per detector (``rows``, :data:`RANGE_COLUMNS`), over
    [``start``, ``end``]; ``open`` is how many anomalies were open at its end."""

    start: str = ""
    end: str = ""
    open: int = 0

    def to_json(self) -> dict[str, Any]:
        counted = ("windows", "findings", "opened", "incidents", "resolved")
        totals = {name: sum(row[RANGE_COLUMNS.index(name)] for row in self.rows)
                  for name in counted}  # fmt: skip
        return {**super().to_json(), "from": self.start, "to": self.end, **totals,
                "open": self.open}  # fmt: skip

    def summary(self) -> list[str]:
        """Lines for people: the totals, and where to look next."""
        json = self.to_json()
        if not self.rows:
            return [f"no window of any detector ends between {self.start} and {self.end}"]
        return [
            f"{_counted(json['windows'], 'window', 'windows')} run from {self.start} to "
            f"{self.end}: {_counted(json['findings'], 'finding', 'findings')}, "
            f"{_counted(json['opened'], 'anomaly', 'anomalies')} opened "
            f"({_incidents(json['incidents'])}), {json['resolved']} resolved, {self.open} open "
            "at the end ('segwatch anomalies' lists them by incident, 'segwatch anomalies "
            "--findings' every finding)"
        ]


def range_windows(
    specs: list[DetectorSpec], start: dt.datetime, end: dt.datetime
) -> list[tuple[dt.datetime, int]]:
    """Every (cadence boundary, spec index) with ``start`` < boundary <= ``end``, in the
    order the scheduler runs them: by time, then in the specs' order.

    ``ValueError`` when ``end`` is not after ``start`` or the range is past
    :data:`MAX_RANGE`.
    """
    if end <= start:
        raise ValueError(f"the range must end after it starts ({start.isoformat()} to "
                         f"{end.isoformat()})")  # fmt: skip
    if end - start > MAX_RANGE:
        raise ValueError(f"a range of {end - start} is past the {MAX_RANGE.days} days one run "
                         "covers: split it")  # fmt: skip
    first, last = int(start.timestamp()), int(end.timestamp())
    moments: list[tuple[int, int]] = []
    for index, spec in enumerate(specs):
        boundary = first - first % spec.cadence + spec.cadence
        moments += [(b, index) for b in range(boundary, last + 1, spec.cadence)]
    return [(dt.datetime.fromtimestamp(b, dt.timezone.utc), i) for b, i in sorted(moments)]


def detect_range(
    client: Client,
    start: dt.datetime,
    end: dt.datetime,
    specs: list[DetectorSpec] | None = None,
    progress: Callable[[int, int], None] | None = None,
    helpers: Sequence[Client] = (),
) -> RangeResult:
    """Run every window of every detector (``specs``, default the manifest's) that ends in
    (``start``, ``end``], in time order; ``progress(done, total)`` after each moment's
    windows. The windows due at one moment run as the scheduler's turn would, as a group
    on ``client`` and ``helpers`` (:func:`~segwatch.clickhouse.detection.run_detector_group`)."""
    chosen = load_manifest() if specs is None else specs
    windows = range_windows(chosen, start, end)
    tallies = [_Tally(spec.name) for spec in chosen]
    done = 0
    for moment, group in groupby(windows, key=lambda window: window[0]):
        indexes = [index for _, index in group]
        outcomes = run_detector_group(client, [chosen[i] for i in indexes], moment, helpers)
        for index, outcome in zip(indexes, outcomes, strict=True):
            if isinstance(outcome, Exception):
                raise outcome
            tallies[index].add(outcome)
        done += len(indexes)
        if progress is not None:
            progress(done, len(windows))
    still_open = _open_anomalies(client, [name for s in chosen for name in s.detectors])
    return RangeResult(list(RANGE_COLUMNS), [t.row() for t in tallies if t.windows],
                       _second(start), _second(end), still_open)  # fmt: skip


def _second(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Tally:
    """One detector's runs over a range, as a row of :data:`RANGE_COLUMNS`."""

    detector: str
    windows: int = 0
    first_end: str = ""
    last_end: str = ""
    findings: int = 0
    opened: int = 0
    incidents: int = 0
    resolved: int = 0

    def add(self, run: DetectorRun) -> None:
        self.windows += 1
        self.first_end = self.first_end or run.window_end.isoformat()
        self.last_end = run.window_end.isoformat()
        self.findings += len(run.new_anomalies)
        self.opened += len(run.opened)
        self.incidents += incidents_opened(run)
        self.resolved += len(run.resolved)

    def row(self) -> list[Any]:
        return [self.detector, self.windows, self.first_end, self.last_end, self.findings,
                self.opened, self.incidents, self.resolved]  # fmt: skip


def _open_anomalies(client: Client, detectors: list[str]) -> int:
    """Open anomalies of ``detectors``, store-wide (the ``segwatch_open_anomalies`` query)."""
    counts = open_anomaly_counts(client)
    return sum(n for (_, detector, _), n in counts.items() if detector in detectors)
