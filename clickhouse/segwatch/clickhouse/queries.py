"""The read queries the CLI and the local API share."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from .read_only import check_read_only

__all__ = [
    "ANOMALY_STATES",
    "AnomalyFilter",
    "QueryResult",
    "add_exemplar_span_ids",
    "anomaly_incidents_sql",
    "anomaly_states_sql",
    "json_value",
    "list_anomalies",
    "open_anomaly_counts",
    "open_incident_counts",
    "read_only_query",
    "run_query",
]

_SELECT = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)

READ_ONLY = {"readonly": 1}
"""ClickHouse refuses writes and DDL under ``readonly=1``, whatever the query says."""


@dataclass(frozen=True)
class QueryResult:
    """A query result: column names and rows."""

    columns: list[str]
    rows: list[list[Any]]

    def to_json(self) -> dict[str, Any]:
        """Strict JSON, NaN as ``"nan"`` (as ClickHouse's ``output_format_json_quote_denormals``
        writes it), so that it stays apart from NULL (``null``) through the API."""
        rows = [[json_value(v, nan="nan") for v in r] for r in self.rows]
        return {"columns": self.columns, "rows": rows}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueryResult:
        return cls(list(data["columns"]), [list(r) for r in data["rows"]])


def json_value(value: Any, nan: str | None = None) -> Any:
    """A value as strict JSON has it: NaN is ``nan`` (default null), infinities and
    datetimes are text."""
    if isinstance(value, float) and not math.isfinite(value):
        return nan if math.isnan(value) else str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [json_value(v, nan) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v, nan) for k, v in value.items()}
    return str(value)


def run_query(
    client: Client,
    query: str,
    parameters: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> QueryResult:
    """Run a query into a :class:`QueryResult`, with column names even when no row comes back."""
    result = client.query(query, parameters=parameters, settings=settings)
    columns = list(result.column_names)
    if not columns and not result.result_rows and _SELECT.match(query):
        # The embedded engine names no columns for an empty result: ask for them.
        try:
            described = client.query(
                f"DESCRIBE TABLE ({query.strip().rstrip(';')})",
                parameters=parameters,
                settings=settings,
            )
            columns = [str(row[0]) for row in described.result_rows]
        except ClickHouseError:
            pass  # e.g. a FORMAT clause: the rows (none) still stand
    return QueryResult(columns, [list(row) for row in result.result_rows])


def read_only_query(client: Client, query: str) -> QueryResult:
    """Run an analyst's query: one statement that only reads, under ``readonly=1``.

    :func:`~segwatch.clickhouse.read_only.check_read_only` refuses, with a
    ``ValueError`` naming what it found, several statements (a server refuses
    them; the embedded engine ran the first and left its result behind for the
    next query to trip on), statements other than SELECT, WITH ... SELECT,
    SHOW, DESCRIBE, EXPLAIN and EXISTS (``SYSTEM``, ``KILL``, ``USE`` ...),
    ``INTO OUTFILE`` and a query's own ``FORMAT`` clause, before anything runs.
    """
    check_read_only(query)
    return run_query(client, query, settings=READ_ONLY)


ANOMALY_STATES = ("all", "open", "resolved")


@dataclass(frozen=True)
class AnomalyFilter:
    """Which anomalies to list; every field is validated (``ValueError`` names it).

    ``since``: only anomalies with a transition (or, with ``findings``, a
    finding) in the last this many seconds. ``findings``: list what each
    detector run found, window by window, instead of the anomalies' states.
    """

    limit: int = 50
    model: str | None = None
    state: str = "all"
    since: int | None = None
    findings: bool = False

    def __post_init__(self) -> None:
        if (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, int)
            or not (1 <= self.limit <= 10_000)
        ):
            raise ValueError("'limit' must be an integer from 1 to 10000")
        if self.model is not None and not isinstance(self.model, str):
            raise ValueError("'model' must be a string")
        if self.state not in ANOMALY_STATES:
            raise ValueError(f"'state' must be one of {', '.join(ANOMALY_STATES)}")
        if self.since is not None and (
            isinstance(self.since, bool) or not isinstance(self.since, int) or self.since <= 0
        ):
            raise ValueError("'since' must be a positive number of seconds")
        if not isinstance(self.findings, bool):
            raise ValueError("'findings' must be true or false")

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "model": self.model, "state": self.state,
                "since": self.since, "findings": self.findings}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnomalyFilter:
        unknown = set(data) - {"limit", "model", "state", "since", "findings"}
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**data)


def anomaly_states_sql() -> str:
    """The query of every anomaly's current state (``anomaly_states.sql``), to wrap as a
    subquery: one row per anomaly, ``current_state`` the state of its latest transition
    and the rest from its latest ``open`` one; parameter ``model`` (``''``: every model)."""
    return resources.files("segwatch.clickhouse").joinpath("anomaly_states.sql").read_text("utf-8")


_ANOMALY_STATES = anomaly_states_sql()


def anomaly_incidents_sql() -> str:
    """Every anomaly's current state with its incident (``anomaly_incidents.sql``: role,
    reason, severity, specificity, incident_key), to wrap as a subquery; parameter
    ``model`` (``''``: every model)."""
    text = resources.files("segwatch.clickhouse").joinpath("anomaly_incidents.sql")
    return text.read_text("utf-8").replace("/*@anomaly_states*/", f"\n{_ANOMALY_STATES}\n")


_ANOMALY_INCIDENTS = anomaly_incidents_sql()

_STATES_QUERY = f"""
SELECT incident, role, current_state AS state, opened_at, resolved_at, detector, model_name,
       model_version, model_stage, segment_dim, segment_value, quantity,
       round(last_score, 4) AS score, last_support AS support,
       last_exemplars[1] AS exemplar_trace_id,
       if(reason = '', last_details, concat(reason, '. ', last_details)) AS details
FROM (
    -- Incidents, open first, the most severe then the most specific: the limit counts them.
    SELECT *,
           dense_rank() OVER (ORDER BY incident_open DESC, incident_severity DESC,
                                       incident_specificity DESC, incident_key) AS incident_rank
    FROM (
        SELECT *,
               max(current_state = 'open') OVER incident_rows AS incident_open,
               max(last_change) OVER incident_rows AS incident_change,
               max(severity) OVER incident_rows AS incident_severity,
               max(if(role = 'root', specificity, 0)) OVER incident_rows AS incident_specificity
        FROM ({_ANOMALY_INCIDENTS})
        WINDOW incident_rows AS (PARTITION BY incident_key)
    )
    -- By incident: an open incident is listed whole (a root that resolved while a
    -- consequence is open included), a resolved one once all of it resolved.
    WHERE ({{state:String}} = 'all' OR ({{state:String}} = 'open') = incident_open)
      AND ({{since:UInt64}} = 0 OR incident_change >= now() - toIntervalSecond({{since:UInt64}}))
)
WHERE incident_rank <= {{limit:UInt32}}
-- In each incident its root first.
ORDER BY incident_rank, role = 'root' DESC, severity DESC, last_change DESC
"""

_OPEN_COUNTS_QUERY = f"""
SELECT model_name, detector, segment_dim, countIf(current_state = 'open')
FROM ({_ANOMALY_STATES})
GROUP BY model_name, detector, segment_dim
"""

_FINDINGS_QUERY = """
SELECT window_end, detector, model_name, model_version, model_stage, segment_dim,
       segment_value, quantity, round(score, 4) AS score, threshold, p_value, support,
       exemplar_trace_ids[1] AS exemplar_trace_id, details
FROM ml_anomalies FINAL
WHERE ({model:String} = '' OR model_name = {model:String})
  AND ({since:UInt64} = 0 OR window_end >= now() - toIntervalSecond({since:UInt64}))
ORDER BY window_end DESC, score DESC
LIMIT {limit:UInt32}
"""


def list_anomalies(client: Client, selection: AnomalyFilter | None = None) -> QueryResult:
    """The anomalies grouped by incident, or each run's findings.

    ``state`` and ``since`` select incidents, whole: an open incident is listed with
    every anomaly it has, one that resolved included (its root may resolve before its
    consequences); ``limit`` counts incidents, each listed whole (with ``findings``,
    rows). Incidents come open first, then by severity
    (the largest score over threshold of their anomalies) and specificity (a cross, a
    segment, the whole model); in each, the root first and its consequences after it
    (``role``), each consequence's ``details`` starting with why it belongs. An
    anomaly's ``details`` is the sentence it opened with: a resolved one keeps it (its
    ``resolved_at`` says when it ended), not its resolution's "not found in the last
    windows". ``FINAL``: one row per key whatever the merges have done so far.
    A ``model`` the store has no calls, anomalies or profile of is a ``ValueError``
    naming those it has.
    """
    selection = selection or AnomalyFilter()
    parameters = {
        "limit": selection.limit,
        "model": selection.model or "",
        "state": selection.state,
        "since": selection.since or 0,  # 0: no time limit
    }
    query = _FINDINGS_QUERY if selection.findings else _STATES_QUERY
    result = run_query(client, query, parameters=parameters)
    if selection.model and not result.rows:
        _check_known_model(client, selection.model)
    return result


_KNOWN_MODELS = """
SELECT DISTINCT model_name FROM ml_segment_aggregates WHERE segment_dim = '__all__'
UNION DISTINCT SELECT DISTINCT model_name FROM ml_anomaly_events
UNION DISTINCT SELECT DISTINCT model_name FROM ml_baseline_aggregates
"""


def _check_known_model(client: Client, model: str) -> None:
    """``ValueError`` naming the store's models (with calls, anomalies or a profile) when
    ``model`` is none of them (a typo lists nothing, as a model without anomalies does,
    unless it is said)."""
    known = sorted(str(row[0]) for row in client.query(_KNOWN_MODELS).result_rows)
    if model not in known:
        have = f"it has {', '.join(known)}" if known else "it holds no model calls yet"
        raise ValueError(f"unknown model {model!r}: {have}")


def open_anomaly_counts(client: Client) -> dict[tuple[str, ...], int]:
    """Open anomalies per (model, detector, segment dimension), store-wide: 0 for a key whose
    anomalies all resolved (the ``segwatch_open_anomalies`` gauge). Raises what the client
    raises when the store cannot answer."""
    rows = client.query(_OPEN_COUNTS_QUERY, parameters={"model": ""}).result_rows
    return {(str(model), str(detector), str(dim)): int(n) for model, detector, dim, n in rows}


def open_incident_counts(client: Client) -> dict[tuple[str, ...], int]:
    """Open incidents per (model, root detector), store-wide: 0 for a key whose incidents all
    resolved (the ``segwatch_open_incidents`` gauge). Raises what the client raises when the
    store cannot answer."""
    rows = client.query(
        "SELECT model_name, root_detector, countIf(state = 'open') FROM ml_incidents GROUP BY ALL"
    ).result_rows
    return {(str(model), str(detector)): int(n) for model, detector, n in rows}


def add_exemplar_span_ids(client: Client, transitions: list[dict[str, Any]]) -> None:
    """Set each transition's ``exemplar_span_id``: the span of its first exemplar trace
    that was a call of its model, read from the raw calls (aggregates keep trace ids
    only). Left out when raw calls are not kept or have expired.
    """
    wanted = {(t["model_name"], t["exemplar_trace_ids"][0]) for t in transitions
              if t.get("exemplar_trace_ids")}  # fmt: skip
    if not wanted:
        return
    starts = [t["window_start"] for t in transitions]
    ends = [t["window_end"] for t in transitions]
    rows = client.query(
        "SELECT model_name, trace_id, any(span_id) FROM ml_model_calls "
        "WHERE model_name IN {models:Array(String)} AND trace_id IN {traces:Array(String)} "
        # exemplars come from the window, or from the baseline before it (a vanished segment)
        "AND timestamp >= {since:DateTime('UTC')} - INTERVAL 8 DAY "
        "AND timestamp < {until:DateTime('UTC')} GROUP BY model_name, trace_id",
        parameters={
            "models": sorted({m for m, _ in wanted}),
            "traces": sorted({trace for _, trace in wanted}),
            "since": min(starts).strftime("%Y-%m-%d %H:%M:%S"),
            "until": max(ends).strftime("%Y-%m-%d %H:%M:%S"),
        },
    ).result_rows
    spans = {(model, trace): span for model, trace, span in rows}
    for t in transitions:
        trace_ids = t.get("exemplar_trace_ids") or []
        span = spans.get((t["model_name"], trace_ids[0])) if trace_ids else None
        if span:
            t["exemplar_span_id"] = span
