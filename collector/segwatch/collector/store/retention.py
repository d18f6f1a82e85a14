"""Retention: how long the store keeps each kind of row, as its tables' TTLs.

``storage.retention`` gives a duration per kind of row (:data:`RETENTION_TABLES`
names the tables and the time each row ages by). At store setup
:func:`apply_retention` makes each table's TTL the configured one: ``ALTER TABLE
... MODIFY TTL``, or ``REMOVE TTL`` for ``forever``; and only when it differs
from the table's, because a changed TTL makes ClickHouse rewrite the table's
parts in the background (``materialize_ttl_after_modify``). A kind the config
leaves out keeps whatever its tables have. Expired rows go at ClickHouse's next
TTL merge (``merge_with_ttl_timeout``, 4 hours by default), not at the second.

On a cluster (:mod:`segwatch.clickhouse.cluster`) the tables the code names are
Distributed: the TTL goes on the local table each reads, ``ON CLUSTER``.

Thread contract: called once, at store setup, on the thread setting the store up.
"""

from __future__ import annotations

import logging
from typing import Final, NamedTuple

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.sql_text import Token, tokens
from segwatch.clickhouse.store import validate_identifier
from segwatch.collector.config.storage import FOREVER, RetentionConfig

__all__ = [
    "RETENTION_TABLES",
    "TableEngine",
    "apply_retention",
    "distributed_target",
    "ttl_expression",
]

_logger = logging.getLogger(__name__)

RETENTION_TABLES: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "raw_calls": (("ml_model_calls", "toDateTime(timestamp)"),),
    "labels": (("ml_labels", "toDateTime(timestamp)"),),
    "aggregates": (
        ("ml_segment_aggregates", "bucket_start"),
        ("ml_segment_rollup_5m", "bucket_start"),
        ("ml_segment_rollup_1h", "bucket_start"),
        ("ml_late_buckets", "bucket_start"),
    ),
    "anomalies": (
        ("ml_anomalies", "window_end"),
        ("ml_anomaly_events", "window_end"),
        ("ml_incident_members", "anomaly_opened_at"),
    ),
    "traces": (("otel_traces", "toDateTime(Timestamp)"), ("otel_traces_trace_id_ts", "Start")),
}
"""For each key of ``storage.retention``: its tables, and the time a row of each ages by."""

_UNITS = ((86400, "Day"), (3600, "Hour"), (60, "Minute"), (1, "Second"))


class TableEngine(NamedTuple):
    """A table as ``system.tables`` describes it."""

    name: str
    engine: str
    engine_full: str


def apply_retention(client: Client, retention: RetentionConfig) -> list[str]:
    """Set every configured kind's tables to its retention; the statements run (none: no change)."""
    statements = []
    for kind, tables in RETENTION_TABLES.items():
        seconds = getattr(retention, kind)
        if seconds is None:
            continue
        for table, aged_by in tables:
            statement = _ttl_change(client, table, ttl_expression(aged_by, seconds))
            if statement:
                # The rewrite of the parts goes on in the background: setup does not wait.
                client.command(statement, settings={"mutations_sync": 0})
                _logger.info("storage.retention.%s: %s", kind, statement)
                statements.append(statement)
    return statements


def ttl_expression(aged_by: str, seconds: int) -> str:
    """The TTL keeping rows ``seconds`` after ``aged_by``, as ClickHouse prints it; "" forever."""
    if seconds == FOREVER:
        return ""
    size, unit = next((size, unit) for size, unit in _UNITS if seconds % size == 0)
    return f"{aged_by} + toInterval{unit}({seconds // size})"


def _ttl_change(client: Client, table: str, wanted: str) -> str | None:
    """The ALTER giving ``table`` the TTL ``wanted``, or None when it has it already."""
    described = _describe(client, table)
    on_cluster = ""
    if described.engine == "Distributed":
        cluster, local = distributed_target(described.engine_full)
        described, on_cluster = _describe(client, local), f" ON CLUSTER {cluster}"
    if _texts(_current_ttl(described.engine_full)) == _texts(tokens(wanted)):
        return None
    change = f"MODIFY TTL {wanted}" if wanted else "REMOVE TTL"
    return f"ALTER TABLE {described.name}{on_cluster} {change}"


def _describe(client: Client, table: str) -> TableEngine:
    rows = client.query(
        "SELECT engine, engine_full FROM system.tables "
        "WHERE database = currentDatabase() AND name = {table:String}",
        parameters={"table": table},
    ).result_rows
    if not rows:
        raise LookupError(f"storage.retention: the store has no table {table} (not migrated?)")
    return TableEngine(table, str(rows[0][0]), str(rows[0][1]))


def _current_ttl(engine_full: str) -> list[Token]:
    """The tokens of the table's TTL clause (``engine_full`` of ``system.tables``); [] for none."""
    found = tokens(engine_full)
    start = next((i for i, t in enumerate(found) if t.depth == 0 and t.keyword() == "TTL"), None)
    if start is None:
        return []
    clause = []
    for token in found[start + 1 :]:
        if token.depth == 0 and token.keyword() in ("SETTINGS", "COMMENT"):
            break
        clause.append(token)
    return clause


def _texts(clause: list[Token]) -> list[str]:
    return [token.text for token in clause]


def distributed_target(engine_full: str) -> tuple[str, str]:
    """(cluster, local table) of a ``Distributed(cluster, database, table, ...)`` engine."""
    arguments: list[list[Token]] = [[]]
    for token in tokens(engine_full)[2:]:  # past "Distributed" and "("
        if token.depth == 0:
            break  # its closing bracket
        if token.depth == 1 and token.text == ",":
            arguments.append([])
        else:
            arguments[-1].append(token)
    if len(arguments) < 3 or any(len(argument) != 1 for argument in arguments[::2][:2]):
        raise ValueError(f"cannot read the Distributed engine {engine_full!r}")
    cluster, table = (_unquoted(arguments[0][0]), _unquoted(arguments[2][0]))
    return validate_identifier(cluster, "cluster name"), validate_identifier(table, "table")


def _unquoted(token: Token) -> str:
    return token.text[1:-1] if token.kind in ("string", "ident") else token.text
