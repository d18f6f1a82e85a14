"""Incidents: the anomalies that share a cause, one incident per fault, named by its root.

One fault opens several anomalies. A feature falling by half for
``country=BR`` is found by ``psi_drift`` on the feature, again on the score
it moves, by ``metric_shift`` on the score; a feature going missing for
``country=BR`` (``data_missing``) also shows as ``feature.country`` drifting
in the segment ``feature.amount=MISSING`` (the same calls seen from the other
dimension). Each anomaly that opens joins the open incident it belongs to, or
opens one:

* ``same_segment`` — an open member of the incident is in the same segment of
  the same model (or a cross within it, or the segment a cross lies in),
  whatever the detector or quantity;
* ``mirror`` — an open member's quantity is this anomaly's segment dimension
  and its segment dimension this anomaly's quantity;
* ``explained`` — recomputed from the raw calls, this anomaly's statistic
  passes its threshold with the calls of the incident root's segment (of
  another dimension) and no longer does without them (:mod:`.explained`): a
  decile of an unrelated feature, or the whole model, moved only because the
  root's segment's calls are among its own.

Only an incident whose latest anomaly opened at most
:data:`~.incident_members.JOIN_WITHIN` (2 h) before, as it stood at the
anomaly's window, can be joined: one fault's anomalies open within their
detectors' persistence windows, and an anomaly that stays open must not
swallow a later fault in its segment (a consequence does not alert).

The incident's **root** is the member that names the cause, ranked: a segment
that is not defined by missingness (``x=MISSING`` is where a missing feature
shows, not where it went missing), an input (feature, context, traffic) before
an output before a metric before a label, data quality before drift before a
level shift before bias and performance, then the larger score over threshold,
then the earlier. The others are its **consequences**; the root can change
while the incident is open (the feature's drift opening a window after the
score's). An incident is open while any member is; its id is the same in
``ml_incident_members``, the ``ml.anomaly`` events and the webhooks.

One alert per incident: a transition that opens an incident, or resolves its
last open member, carries ``incident_alert`` (webhooks post only those; the
OTLP records of the others go out at INFO). Incidents are assigned within one
detector run: two collectors running two detectors of one model at the same
moment may open two incidents for one fault when they are mirrors (same-segment
incidents opened in the same window share their id, so they merge). A run that
failed between its anomalies' events and their incidents is mended by the next
(:mod:`.incident_repair`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from clickhouse_connect.driver.client import Client

from .explained import EXPLAINABLE, explained_by
from .incident_members import IncidentMember, open_incidents, read_members, write_members
from .lifecycle import cross_parents, segment_text, utc

__all__ = [
    "IncidentMember",
    "incident_summary",
    "join_incidents",
    "root_rank",
    "settle_incidents",
]

# What names a cause best: lower first (see the module docstring).
_KIND_RANK = {"feature": 0, "context": 0, "calls": 0, "output": 1, "metric": 2, "label": 3}
_DETECTOR_RANK = {
    "data_missing": 0, "data_range": 0, "data_categories": 0,
    "psi_drift_training": 1, "psi_drift": 1, "version_drift": 1, "volume": 1,
    "metric_shift": 2, "metric_shift_seasonal": 2,
    "bias": 3, "performance": 4,
}  # fmt: skip


def root_rank(member: IncidentMember) -> tuple[Any, ...]:
    """The order in which members name their incident's cause: the first is the root."""
    kind = str(member.quantity).split(".", 1)[0]
    return (
        member.segment_value == "MISSING",
        _KIND_RANK.get(kind, len(_KIND_RANK)),
        _DETECTOR_RANK.get(member.detector, len(_DETECTOR_RANK)),
        -member.severity,
        member.opened_at,
        tuple(str(k) for k in member.key),
    )


def _relation(anomaly: IncidentMember, member: IncidentMember) -> str | None:
    """How ``anomaly`` belongs with ``member``'s incident, if it does."""
    if anomaly.model_name != member.model_name:
        return None
    around = {anomaly.segment, *cross_parents(*anomaly.segment)}
    if member.segment in around or anomaly.segment in cross_parents(*member.segment):
        return "same_segment"
    if anomaly.segment_dim == member.quantity and anomaly.quantity == member.segment_dim:
        return "mirror"
    return None


_RELATION_ORDER = ("same_segment", "mirror")


def _incident_for(
    anomaly: IncidentMember, incidents: dict[str, list[IncidentMember]]
) -> tuple[str, str] | None:
    """(incident id, relation) of the open incident ``anomaly`` joins, or None.

    The closest relation wins; among equals, the incident opened first.
    """
    best: tuple[tuple[int, dt.datetime, str], str, str] | None = None
    for incident_id, members in incidents.items():
        if not any(m.state == "open" for m in members):
            continue
        for member in members:
            relation = _relation(anomaly, member)
            if relation is None:
                continue
            rank = (_RELATION_ORDER.index(relation), min(m.opened_at for m in members), incident_id)
            if best is None or rank < best[0]:
                best = (rank, incident_id, relation)
    return None if best is None else (best[1], best[2])


def _new_incident_id(anomaly: IncidentMember) -> str:
    """Deterministic: a rerun of the window, or another collector opening the same
    segment's incident in the same window, gives the same id."""
    parts = (anomaly.model_name, *anomaly.segment, anomaly.opened_at.isoformat())
    text = "\x1f".join(parts)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _reason(member: IncidentMember, root: IncidentMember) -> str:
    """Why ``member`` belongs to ``root``'s incident, in a sentence: "a consequence of
    feature.amount falling for feature.country=BR (psi_drift): output.score rose there
    (metric_shift)"."""
    where = segment_text(*root.segment)
    cause = f"{root.quantity} {root.movement[1]} for {where} ({root.detector})"
    if "mirror" in (_relation(member, root), _relation(root, member)):
        return (f"the calls of {cause} seen from {member.segment_dim}: "
                f"{member.quantity} differs for {segment_text(*member.segment)}")  # fmt: skip
    return f"a consequence of {cause}: {_follows(member, root)} ({member.detector})"


def _follows(member: IncidentMember, root: IncidentMember) -> str:
    """``output.score rose there``, or ``... for <its segment>``."""
    where = "there" if member.segment == root.segment else f"for {segment_text(*member.segment)}"
    return f"{member.quantity} {member.movement[0]} {where}"


def _ranked(members: list[IncidentMember]) -> list[IncidentMember]:
    """The members with their roles, and reasons from the root they rank below (an
    explained member keeps the recomputation that attached it)."""
    explained = [m for m in members if m.relation == "explained"]
    root = min([m for m in members if m.relation != "explained"] or explained, key=root_rank)
    return [
        replace(m, role="root", reason="") if m is root
        else replace(m, role="consequence", reason=m.reason) if m.relation == "explained"
        else replace(m, role="consequence", reason=_reason(m, root))
        for m in members
    ]  # fmt: skip


_MOST_CAUSES_TRIED = 5
_logger = logging.getLogger(__name__)


def _explaining_incident(
    client: Client,
    transition: dict[str, Any],
    incidents: dict[str, list[IncidentMember]],
    parameters: Mapping[str, Any],
) -> tuple[str, str] | None:
    """(incident id, reason) of the open incident whose root's segment explains the
    anomaly away (see :mod:`.explained`), the most severe tried first; or None."""
    if transition["detector"] not in EXPLAINABLE:
        return None
    roots = sorted(
        (m for ms in incidents.values() for m in ms
         if m.role == "root" and m.model_name == transition["model_name"]
         and any(o.state == "open" for o in ms)),
        key=lambda m: -m.severity,
    )  # fmt: skip
    for root in roots[:_MOST_CAUSES_TRIED]:
        try:
            evidence = explained_by(client, transition, root.segment, parameters)
        except Exception:  # an incident of its own rather than a run that fails after the
            # lifecycle recorded its transitions (they would never be notified)
            _logger.exception("recomputing %s without %s failed", transition["details"], root)
            continue
        if evidence:
            reason = (f"explained by {root.quantity} for {segment_text(*root.segment)} "
                      f"({root.detector}): {evidence}")  # fmt: skip
            return root.incident_id, reason
    return None


def incident_summary(members: Sequence[IncidentMember]) -> str:
    """The incident in words: the root's sentence, then what follows from it."""
    root = next((m for m in members if m.role == "root"), None)
    if root is None:
        return ""
    consequences: dict[str, list[str]] = {}  # what followed, by the detectors that saw it
    for m in members:
        if m.role == "consequence":
            consequences.setdefault(_follows(m, root), []).append(m.detector)
    if not consequences:
        return root.details
    parts = [f"{what} ({', '.join(sorted(set(detectors)))})"
             for what, detectors in sorted(consequences.items())]  # fmt: skip
    return f"{root.details}. As a consequence: {'; '.join(parts)}"


def join_incidents(
    client: Client, opened: Sequence[dict[str, Any]], parameters: Mapping[str, Any] | None = None
) -> None:
    """Give each anomaly that opened (``opened``: transitions of one detector run, whose
    ``parameters`` they were found with) its incident, recorded in ``ml_incident_members``.

    Sets on each transition ``incident_id``, ``incident_role``, ``incident_alert``
    (True when it opened the incident) and ``incident_summary``.
    """
    if not opened:
        return
    moment = max(utc(t["window_end"]) for t in opened)
    incidents = open_incidents(client, sorted({t["model_name"] for t in opened}), moment)
    stored = {(m.incident_id, m.key, m.opened_at): m for ms in incidents.values() for m in ms}
    first_of: dict[str, dict[str, Any]] = {}
    joined: list[tuple[dict[str, Any], IncidentMember]] = []
    for transition in sorted(opened, key=lambda t: root_rank(IncidentMember.of_transition(t))):
        anomaly = IncidentMember.of_transition(transition)
        found = _incident_for(anomaly, incidents)
        reason = ""
        explaining = (
            None if found else _explaining_incident(client, transition, incidents, parameters or {})
        )
        if explaining:
            found = (explaining[0], "explained")
            reason = explaining[1]
        if found is None:
            incident_id, relation = _new_incident_id(anomaly), "first"
            if incident_id not in incidents:
                first_of[incident_id] = transition
        else:
            incident_id, relation = found
        role = "root" if relation == "first" else "consequence"  # until the incident is ranked
        anomaly = replace(
            anomaly, incident_id=incident_id, relation=relation, reason=reason, role=role
        )
        incidents.setdefault(incident_id, []).append(anomaly)
        joined.append((transition, anomaly))
    touched = {anomaly.incident_id for _, anomaly in joined}
    changed: list[IncidentMember] = []
    for incident_id in touched:
        incidents[incident_id] = _ranked(incidents[incident_id])
        changed += [m for m in incidents[incident_id]
                    if stored.get((m.incident_id, m.key, m.opened_at)) != m]  # fmt: skip
    write_members(client, _still_resolved(client, changed))
    for transition, anomaly in joined:
        members = incidents[anomaly.incident_id]
        same = (anomaly.key, anomaly.opened_at)
        role = next(m.role for m in members if (m.key, m.opened_at) == same)
        transition.update(
            incident_id=anomaly.incident_id,
            incident_role=role,
            incident_alert=first_of.get(anomaly.incident_id) is transition,
            incident_summary=incident_summary(members),
        )


def _still_resolved(client: Client, changed: list[IncidentMember]) -> list[IncidentMember]:
    """``changed`` with the state each member has in the store now: another collector may
    have resolved one while this run ranked its incident (a rewrite must not reopen it)."""
    ids = sorted({m.incident_id for m in changed})
    if not ids:
        return changed
    now = read_members(client, "incident_id IN {ids:Array(String)}", {"ids": ids})
    resolved = {(m.key, m.opened_at): m for ms in now.values() for m in ms
                if m.state == "resolved"}  # fmt: skip
    return [
        replace(m, state="resolved", resolved_at=resolved[(m.key, m.opened_at)].resolved_at)
        if m.state == "open" and (m.key, m.opened_at) in resolved else m
        for m in changed
    ]  # fmt: skip


def settle_incidents(client: Client, resolved: Sequence[dict[str, Any]]) -> None:
    """Record the members that resolved (``resolved``: transitions of one detector run).

    Sets on each transition whose anomaly belongs to an incident ``incident_id``,
    ``incident_role``, ``incident_summary`` and ``incident_alert`` (True on one
    transition per incident that has no open member left: the incident resolved).
    """
    if not resolved:
        return
    incidents = open_incidents(client, sorted({t["model_name"] for t in resolved}))
    by_key = {m.key: m for ms in incidents.values() for m in ms if m.state == "open"}
    changed: list[IncidentMember] = []
    settled: list[tuple[dict[str, Any], IncidentMember]] = []
    for transition in resolved:
        member = by_key.get(IncidentMember.key_of(transition))
        if member is None:
            continue  # opened before incidents were recorded
        done = replace(member, state="resolved", resolved_at=utc(transition["window_end"]))
        members = incidents[member.incident_id]
        members[members.index(member)] = done
        changed.append(done)
        settled.append((transition, done))
    write_members(client, changed)
    alerted: set[str] = set()
    for transition, member in settled:
        members = incidents[member.incident_id]
        closed = all(m.state == "resolved" for m in members)
        transition.update(
            incident_id=member.incident_id,
            incident_role=member.role,
            incident_alert=closed and member.incident_id not in alerted,
            incident_summary=incident_summary(members),
        )
        if closed:
            alerted.add(member.incident_id)
