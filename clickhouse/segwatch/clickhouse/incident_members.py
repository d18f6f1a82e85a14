"""One anomaly of an incident, as ``ml_incident_members`` keeps it, and reading and writing
those rows (see :mod:`.incidents` for what an incident is).

A row is written again whenever its member changes (its role when the root changes, its
state when it resolves): ReplacingMergeTree on ``recorded_at``, read with ``FINAL``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from .lifecycle import KEY_COLUMNS, sql_time, utc
from .store import DETECTOR_SETTINGS

__all__ = [
    "JOIN_WITHIN",
    "MEMBERS_TABLE",
    "IncidentMember",
    "open_incidents",
    "read_members",
    "write_members",
]

MEMBERS_TABLE = "ml_incident_members"
_COLUMNS = (
    "incident_id",
    *KEY_COLUMNS,
    "anomaly_opened_at",
    "role",
    "relation",
    "reason",
    "state",
    "resolved_at",
    "score",
    "threshold",
    "support",
    "baseline_value",
    "current_value",
    "exemplar_trace_ids",
    "details",
)


_CHECKS = {  # detectors whose baseline and current values are not the quantity's means
    "data_missing": ("went missing", "going missing"),
    "data_range": ("left its range", "leaving its range"),
    "data_categories": ("took new values", "taking new values"),
    "bias": ("drew apart from the rest", "drawing apart from the rest"),
}


@dataclass(frozen=True)
class IncidentMember:
    """One anomaly of an incident (a row of ``ml_incident_members``)."""

    incident_id: str
    key: tuple[Any, ...]  # the anomaly's values of KEY_COLUMNS
    opened_at: dt.datetime
    role: str = "root"
    relation: str = "first"
    reason: str = ""
    state: str = "open"
    resolved_at: dt.datetime | None = None
    score: float = 0.0
    threshold: float = 0.0
    support: int = 0
    baseline_value: float = math.nan  # the quantity's mean before and in its window
    current_value: float = math.nan
    exemplar_trace_ids: tuple[str, ...] = ()
    details: str = ""

    def _column(self, name: str) -> Any:
        return self.key[KEY_COLUMNS.index(name)]

    @property
    def detector(self) -> str:
        return str(self._column("detector"))

    @property
    def model_name(self) -> str:
        return str(self._column("model_name"))

    @property
    def segment_dim(self) -> str:
        return str(self._column("segment_dim"))

    @property
    def segment_value(self) -> str:
        return str(self._column("segment_value"))

    @property
    def quantity(self) -> str:
        return str(self._column("quantity"))

    @property
    def movement(self) -> tuple[str, str]:
        """What happened to the quantity, as a verb and its -ing form: ``("rose",
        "rising")``, ``("went missing", "going missing")``, ``("moved", "changing")``
        (no mean to compare: a category)."""
        if self.detector in _CHECKS:
            return _CHECKS[self.detector]
        before, now = self.baseline_value, self.current_value
        if not (math.isfinite(before) and math.isfinite(now)) or before == now:
            return "moved", "changing"
        return ("rose", "rising") if now > before else ("fell", "falling")

    @property
    def severity(self) -> float:
        """How far past its threshold: score over threshold."""
        return float(self.score) / max(float(self.threshold), 1e-12)

    @property
    def segment(self) -> tuple[str, str]:
        return (self.segment_dim, self.segment_value)

    @staticmethod
    def key_of(transition: dict[str, Any]) -> tuple[Any, ...]:
        """A transition's (or finding's) values of KEY_COLUMNS."""
        return tuple(transition[k] for k in KEY_COLUMNS)

    @classmethod
    def of_transition(cls, transition: dict[str, Any]) -> IncidentMember:
        """The member an ``open`` transition of :func:`~.lifecycle.update_lifecycle` makes."""
        return cls(
            incident_id="",
            key=cls.key_of(transition),
            opened_at=utc(transition["window_end"]),
            score=float(transition["score"]),
            threshold=float(transition["threshold"]),
            support=int(transition["support"]),
            baseline_value=float(transition.get("baseline_value", math.nan)),
            current_value=float(transition.get("current_value", math.nan)),
            exemplar_trace_ids=tuple(transition.get("exemplar_trace_ids") or ()),
            details=str(transition["details"]),
        )

    def row(self, recorded_at: dt.datetime) -> list[Any]:
        return [
            recorded_at, self.incident_id, *self.key, self.opened_at, self.role, self.relation,
            self.reason, self.state, self.resolved_at, self.score, self.threshold, self.support,
            self.baseline_value, self.current_value, list(self.exemplar_trace_ids), self.details,
        ]  # fmt: skip


JOIN_WITHIN = dt.timedelta(hours=2)
"""How long after an incident's latest anomaly opened another may still join it. One
fault's anomalies open within the persistence windows of each detector (at most 45 minutes
with the default cadences: bias's 2 of 3 windows 15 minutes apart); a later one in the
same segment is another fault, not a consequence of one long open."""


def open_incidents(
    client: Client, models: Iterable[str], joinable_at: dt.datetime | None = None
) -> dict[str, list[IncidentMember]]:
    """Every member of the models' open incidents, by incident. With ``joinable_at``: the
    incidents an anomaly opening then may join, as they stood then (a replay of last month
    does not join today's incidents): one of their anomalies was open at that moment and
    the latest opened at most :data:`JOIN_WITHIN` before it."""
    if joinable_at is None:
        chosen = "state = 'open'"
        parameters: dict[str, Any] = {"models": list(models)}
    else:
        chosen = (
            "anomaly_opened_at <= {at:DateTime('UTC')} GROUP BY incident_id "
            "HAVING max(anomaly_opened_at) >= {at:DateTime('UTC')} - "
            "toIntervalSecond({within:UInt32}) AND countIf(state = 'open' "
            "OR resolved_at > {at:DateTime('UTC')}) > 0"
        )
        parameters = {"models": list(models), "at": sql_time(joinable_at),
                      "within": int(JOIN_WITHIN.total_seconds())}  # fmt: skip
    return read_members(
        client,
        "model_name IN {models:Array(String)} AND incident_id IN ("
        f"SELECT incident_id FROM {MEMBERS_TABLE} FINAL "
        f"WHERE model_name IN {{models:Array(String)}} AND {chosen})",
        parameters,
    )


def read_members(
    client: Client, where: str, parameters: dict[str, Any]
) -> dict[str, list[IncidentMember]]:
    """The members ``where`` (a condition made by this package; values in ``parameters``)
    selects, by incident."""
    result = client.query(
        f"SELECT {', '.join(_COLUMNS)} FROM {MEMBERS_TABLE} FINAL WHERE {where}",
        parameters=parameters,
        settings=DETECTOR_SETTINGS,
    )
    incidents: dict[str, list[IncidentMember]] = {}
    n = len(KEY_COLUMNS)
    for row in result.result_rows:
        values = dict(zip(_COLUMNS, row, strict=True))
        member = IncidentMember(
            incident_id=values["incident_id"],
            key=tuple(row[1 : 1 + n]),
            opened_at=utc(values["anomaly_opened_at"]),
            role=values["role"],
            relation=values["relation"],
            reason=values["reason"],
            state=values["state"],
            resolved_at=utc(values["resolved_at"]) if values["resolved_at"] else None,
            score=float(values["score"]),
            threshold=float(values["threshold"]),
            support=int(values["support"]),
            baseline_value=float(values["baseline_value"]),
            current_value=float(values["current_value"]),
            exemplar_trace_ids=tuple(values["exemplar_trace_ids"]),
            details=values["details"],
        )
        incidents.setdefault(member.incident_id, []).append(member)
    return incidents


def write_members(client: Client, members: Sequence[IncidentMember]) -> None:
    if not members:
        return
    recorded_at = dt.datetime.now(dt.timezone.utc)
    client.insert(
        MEMBERS_TABLE,
        [m.row(recorded_at) for m in members],
        column_names=["recorded_at", *_COLUMNS],
    )
