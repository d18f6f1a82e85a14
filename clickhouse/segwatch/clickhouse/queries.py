"""The read queries the CLI and the local API share."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

__all__ = ["Table", "list_anomalies", "read_only_query", "run_query"]

_SELECT = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)

READ_ONLY = {"readonly": 1}
"""ClickHouse refuses writes and DDL under ``readonly=1``, whatever the query says."""


@dataclass(frozen=True)
class Table:
    """A query result: column names and rows."""

    columns: list[str]
    rows: list[list[Any]]

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": [[_json_value(v) for v in r] for r in self.rows]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Table:
        return cls(list(data["columns"]), [list(r) for r in data["rows"]])


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def run_query(
    client: Client,
    query: str,
    parameters: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> Table:
    """Run a query into a :class:`Table`, with column names even when no row comes back."""
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
    return Table(columns, [list(row) for row in result.result_rows])


def read_only_query(client: Client, query: str) -> Table:
    """Run an analyst's query with ClickHouse's ``readonly=1``."""
    return run_query(client, query, settings=READ_ONLY)


def list_anomalies(client: Client, limit: int = 50, model: str | None = None) -> Table:
    """The latest anomalies, newest window first (``FINAL``: one row per key)."""
    return run_query(
        client,
        "SELECT window_end, detector, model_name, model_version, model_stage, segment_dim, "
        "segment_value, quantity, round(score, 4) AS score, threshold, support, "
        "exemplar_trace_ids[1] AS exemplar_trace_id, details "
        "FROM ml_anomalies FINAL "
        "WHERE {model:String} = '' OR model_name = {model:String} "
        "ORDER BY window_end DESC, score DESC LIMIT {limit:UInt32}",
        parameters={"limit": limit, "model": model or ""},
    )
