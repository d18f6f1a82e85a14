"""AnalystQueries: analysts' SQL through the collector, each query on a budget, cancellable.

One query used to be able to stop the collector: ``SELECT count() FROM
system.numbers`` never returned, every later API request queued behind it, and
after SIGTERM the process ran on. Now each query runs

* on one of a few read-only sessions of its own (``api.max_concurrent_queries``),
  so queries run side by side and never share a session with flushes, detector
  runs or probes;
* under a budget the session itself carries, set before ``readonly=1`` so a
  query's own ``SETTINGS`` cannot lift it: ``max_execution_time``,
  ``max_memory_usage``, ``max_result_rows`` (``result_overflow_mode=throw``);
* cancelled (``KILL QUERY``, found by the session's ``log_comment``) when the
  client goes away or the collector stops.

A budget that runs out is a :class:`QueryBudgetError` naming the config key.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from segwatch.clickhouse.queries import READ_ONLY, QueryResult, read_only_query
from segwatch.clickhouse.store import error_code
from segwatch.collector.cancellable import CancellableRun
from segwatch.collector.config.network import ApiConfig
from segwatch.collector.errors import RetryableError

__all__ = ["AnalystQueries", "QueryBudget", "QueryBudgetError", "QueryCancelledError"]

_logger = logging.getLogger(__name__)
_TAG = "segwatch-api-query-"


@dataclass(frozen=True)
class QueryBudget:
    """What one analyst query may take (``api.max_execution_time`` ... in the config)."""

    seconds: int = 60
    memory_mib: int = 4096
    result_rows: int = 100_000
    concurrent: int = 4

    @classmethod
    def of(cls, api: ApiConfig) -> QueryBudget:
        """The budget the config's ``api`` section sets."""
        return cls(
            api.max_execution_time,
            api.max_memory_mib,
            api.max_result_rows,
            api.max_concurrent_queries,
        )

    def session_settings(self, tag: str) -> dict[str, Any]:
        """The settings of one query session; ``readonly`` last: nothing after it may change."""
        return {
            "max_execution_time": self.seconds,
            "max_memory_usage": self.memory_mib << 20,
            "max_result_rows": self.result_rows,
            "result_overflow_mode": "throw",
            "log_comment": tag,
            **READ_ONLY,
        }

    def sessions(self) -> list[dict[str, Any]]:
        """One set of session settings per concurrent query, each tagged for ``KILL QUERY``
        with a name no other collector on the same store shares."""
        process = f"{_TAG}{os.getpid()}-{secrets.token_hex(4)}"
        return [self.session_settings(f"{process}-{i}") for i in range(self.concurrent)]


class QueryBudgetError(ValueError):
    """A query ran past its time or memory budget, or its result past the row limit."""


class QueryCancelledError(RuntimeError):
    """The query was cancelled: its client went away, or the collector is stopping."""


# ClickHouse error code → what ran out, and the key that sets it.
_BUDGETS = {
    159: ("the query ran past its time budget of {seconds} s", "api.max_execution_time"),
    241: ("the query needed more than its memory budget of {memory_mib} MiB", "api.max_memory_mib"),
    396: (
        "the result is too large: more than {result_rows} rows (add a LIMIT, or aggregate)",
        "api.max_result_rows",
    ),
}


class AnalystQueries:
    """Runs read-only queries on ``sessions`` (tag, client), at most one per session at a time.

    ``control`` is a session that may run ``KILL QUERY``. Thread-safe: the API
    calls :meth:`run` from its request threads.
    """

    def __init__(
        self, sessions: list[tuple[str, Client]], control: Client, budget: QueryBudget
    ) -> None:
        self._free: queue.Queue[tuple[str, Client]] = queue.Queue()
        for session in sessions:
            self._free.put(session)
        self._control = control
        self._control_lock = threading.Lock()
        self._budget = budget
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def run(self, query: str, abandoned: Callable[[], bool] | None = None) -> QueryResult:
        """The query's result; raises when it is refused, runs out of budget or is cancelled.

        ``abandoned`` is polled while the query runs: once it is true (the
        client hung up) the query is killed.
        """
        if self._stopping:
            raise QueryCancelledError("the collector is stopping")
        try:
            tag, client = self._free.get(timeout=10)
        except queue.Empty:
            raise RetryableError(
                f"{self._budget.concurrent} queries are running (api.max_concurrent_queries); "
                "retry later"
            ) from None
        try:
            with self._lock:
                self._running.add(tag)
            return self._run_on(tag, client, query, abandoned)
        finally:
            with self._lock:
                self._running.discard(tag)
            self._free.put((tag, client))

    def _run_on(
        self, tag: str, client: Client, query: str, abandoned: Callable[[], bool] | None
    ) -> QueryResult:
        should_cancel = lambda: self._stopping or bool(abandoned and abandoned())  # noqa: E731
        run = CancellableRun(should_cancel, lambda: self._kill(tag), 0.2)
        try:
            return run.run(lambda: read_only_query(client, query))
        except ClickHouseError as exc:
            error = self._explain(exc, run.cancelled)
            if error is exc:
                raise
            raise error from exc

    def _explain(self, exc: ClickHouseError, cancelled: bool) -> Exception:
        code = error_code(exc)
        if cancelled or code == 394:
            return QueryCancelledError(
                "the query was cancelled: "
                + ("the collector is stopping" if self._stopping else "its client went away")
            )
        if code in _BUDGETS:
            text, key = _BUDGETS[code]
            return QueryBudgetError(f"{text.format(**vars(self._budget))} ({key})")
        return exc

    def _kill(self, tag: str) -> None:
        try:
            with self._control_lock:
                self._control.command(
                    "KILL QUERY WHERE Settings['log_comment'] = {tag:String} ASYNC",
                    parameters={"tag": tag},
                )
        except Exception:
            _logger.exception("cancelling query %s failed", tag)

    def cancel_all(self) -> None:
        """Refuse new queries and cancel the running ones (the collector is stopping)."""
        self._stopping = True
        with self._lock:
            running = list(self._running)
        for tag in running:
            self._kill(tag)
