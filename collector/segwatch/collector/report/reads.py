"""How the report reads the store: its SQL files, query parameters, and a read budget.

Every read goes through a :data:`ReportQuery`, ``(sql, parameters) -> QueryResult``:
:func:`client_query` makes one of a clickhouse-connect client (a store this
process opened, a server, ``segwatch serve``'s door, or the collector's own
client behind ``GET /report``), optionally on a :class:`ReadBudget`. The SQL
lives in this folder's ``.sql`` files; values go in as query parameters only.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from segwatch.clickhouse.queries import QueryResult, anomaly_incidents_sql, run_query
from segwatch.clickhouse.store import error_code

__all__ = [
    "ReadBudget",
    "ReportBudgetError",
    "ReportQuery",
    "client_query",
    "number",
    "rows",
    "segment_label",
    "utc",
]

ReportQuery = Callable[[str, Mapping[str, Any]], QueryResult]
"""Runs one of the report's queries with its parameters (a read; never a write)."""


class ReportBudgetError(ValueError):
    """The report's reads ran past their :class:`ReadBudget`; the message names the key."""


@dataclass(frozen=True)
class ReadBudget:
    """What one report's reads may take: ``seconds`` of engine time for all of its
    queries together (each query may run for what is left), and per query
    ``memory_mib`` and ``result_rows``. The collector's API gives the report its
    analysts' budget (``api.max_execution_time``, ``api.max_memory_mib``,
    ``api.max_result_rows``), which the error messages name."""

    seconds: int
    memory_mib: int
    result_rows: int


_BUDGET_CODES = {  # ClickHouse error code → what ran out, and the key that sets it
    159: ("the report's reads ran past their time budget of {seconds} s", "api.max_execution_time"),
    241: ("a report read needed more than {memory_mib} MiB", "api.max_memory_mib"),
    396: ("a report read returned more than {result_rows} rows", "api.max_result_rows"),
}


def client_query(client: Client, budget: ReadBudget | None = None) -> ReportQuery:
    """The report's queries on ``client``; with ``budget``, whose time counts from the
    first query (not from a wait for the client before it).

    A query that runs out of the budget raises :class:`ReportBudgetError`.
    Thread-safety is the client's: the caller serializes queries on a shared one.
    """
    if budget is None:
        return lambda sql, parameters: run_query(client, sql, parameters=dict(parameters))
    deadline: list[float] = []

    def run(sql: str, parameters: Mapping[str, Any]) -> QueryResult:
        if not deadline:
            deadline.append(time.monotonic() + budget.seconds)
        left = deadline[0] - time.monotonic()
        if left <= 0:
            raise _budget_error(159, budget)
        settings = {
            "max_execution_time": max(1, math.ceil(left)),
            "max_memory_usage": budget.memory_mib << 20,
            "max_result_rows": budget.result_rows,
            "result_overflow_mode": "throw",
        }
        try:
            return run_query(client, sql, parameters=dict(parameters), settings=settings)
        except ClickHouseError as exc:
            code = error_code(exc)
            if code in _BUDGET_CODES:
                raise _budget_error(code, budget) from exc
            raise

    return run


def _budget_error(code: int, budget: ReadBudget) -> ReportBudgetError:
    text, key = _BUDGET_CODES[code]
    return ReportBudgetError(
        f"{text.format(**vars(budget))} ({key}): ask for a shorter period, or one model"
    )


@cache
def _sql(name: str) -> str:
    """This folder's ``name``, its markers filled: ``/*@statistics*/`` with the detectors'
    shared statistics (sw_psi, sw_bin_counts, sw_key_value, ...), ``/*@anomaly_incidents*/``
    with the query of every anomaly's current state and incident that ``segwatch
    anomalies`` reads."""
    text = resources.files(__package__).joinpath(name).read_text("utf-8")
    if "/*@statistics*/" in text:
        statistics = resources.files("segwatch.clickhouse.detectors").joinpath("statistics.sql")
        text = text.replace("/*@statistics*/", statistics.read_text("utf-8"))
    if "/*@anomaly_incidents*/" in text:
        text = text.replace("/*@anomaly_incidents*/", f"\n{anomaly_incidents_sql()}\n")
    return text


def rows(query: ReportQuery, name: str, **parameters: Any) -> list[dict[str, Any]]:
    """The rows of this folder's query ``name`` as dicts; datetimes are passed as UTC text."""
    values = {k: _utc_text(v) if isinstance(v, dt.datetime) else v for k, v in parameters.items()}
    result = query(_sql(name), values)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def utc(value: Any) -> dt.datetime:
    """A time as the store or the API hands it (datetime or ISO text), aware, UTC."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def number(value: Any) -> float:
    """A float from the store (NaN) or from JSON (None for NaN)."""
    return math.nan if value is None else float(value)


def segment_label(dim: str, value: str) -> str:
    """``feature.country=BR``; the whole model is ``__all__``."""
    return "__all__" if dim == "__all__" else f"{dim}={value}"
