"""Running the detectors now, on demand: ``segwatch detect``, the API's ``/detect``, the demo.

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
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.detection import DetectorSpec, load_manifest, run_detectors
from segwatch.clickhouse.queries import QueryResult

__all__ = ["DetectionResult", "detect_table"]

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
    ``findings``, ``opened`` and ``resolved``.
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
        lines.append(
            f"{findings} new finding{'' if findings == 1 else 's'}; a finding opens an anomaly "
            f"once {usual}: {opened} opened, {resolved} resolved ('segwatch anomalies' lists "
            "the anomalies, 'segwatch anomalies --findings' every finding)"
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
    client: Client, at: dt.datetime | None, specs: list[DetectorSpec] | None = None
) -> DetectionResult:
    """Run the detectors (``specs``, default the manifest's) now; tabulate the new findings
    and what each detector evaluated."""
    chosen = load_manifest() if specs is None else specs
    runs = run_detectors(client, at, chosen)
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
        })  # fmt: skip
    return DetectionResult(list(COLUMNS), rows, evaluated)
