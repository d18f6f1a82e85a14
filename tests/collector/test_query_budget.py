"""One query cannot stop the collector: budgets, concurrency, cancellation, bounded SIGTERM.

A real collector subprocess; the never-ending query is the one that hung it,
``SELECT count() FROM system.numbers``, sent by the real CLI or over HTTP.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from collector_process import CollectorProcess
from waiting import wait_until

FOREVER = "SELECT count() FROM system.numbers"
RUNNING = (
    "SELECT count() FROM system.processes WHERE query_id != queryID() "
    "AND Settings['log_comment'] LIKE 'segwatch-api-query-%'"
)


def _collector(tmp_path: Path, api: str) -> CollectorProcess:
    store = tmp_path / "store"
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"storage:\n  dsn: chdb://{store}\nreceiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        f"api:\n  endpoint: 127.0.0.1:0\n{api}scheduler:\n  enabled: false\n"
    )
    return CollectorProcess(config, store)


def _cli_sql(collector: CollectorProcess, query: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "sql", query,
         "--config", str(collector.config)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip


def _post_sql(collector: CollectorProcess, query: str) -> http.client.HTTPConnection:
    """Start a query over a raw connection (the caller reads the answer, or hangs up)."""
    host, port = collector.api.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=300)
    connection.request(
        "POST", "/api/v1/sql", json.dumps({"query": query}),
        {"Content-Type": "application/json", "Authorization": f"Bearer {collector.token}"},
    )  # fmt: skip
    return connection


def test_a_query_past_its_budget_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    collector = _collector(tmp_path, "  max_execution_time: 2s\n  max_result_rows: 1000\n")
    try:
        slow = _cli_sql(collector, FOREVER)
        assert slow.returncode == 1
        *_, error = slow.stderr.strip().splitlines()
        assert error == (
            "segwatch: error: the query ran past its time budget of 2 s (api.max_execution_time)"
        )
        large = _cli_sql(collector, "SELECT number FROM numbers(5000)")
        assert large.returncode == 1
        assert "more than 1000 rows" in large.stderr and "api.max_result_rows" in large.stderr
        # A query's own SETTINGS cannot lift the budget: the session is read-only.
        lifted = _cli_sql(collector, f"{FOREVER} SETTINGS max_execution_time = 1000")
        assert lifted.returncode == 1 and "readonly" in lifted.stderr.lower()
        assert _cli_sql(collector, "SELECT number FROM numbers(1000)").returncode == 0
    finally:
        assert collector.stop() == 0
    # No collector now: the CLI opens the store itself, on the same budget.
    direct = _cli_sql(collector, FOREVER)
    assert direct.returncode == 1
    assert (
        "segwatch: store chdb://" in direct.stderr and "through the collector" not in direct.stderr
    )
    assert direct.stderr.strip().splitlines()[-1] == (
        "segwatch: error: the query ran past its time budget of 2 s (api.max_execution_time)"
    )


def test_a_slow_query_holds_up_neither_other_queries_nor_probes(tmp_path: Path) -> None:
    collector = _collector(tmp_path, "  max_execution_time: 10m\n")
    try:
        slow = _post_sql(collector, FOREVER)
        wait_until(lambda: collector.sql(RUNNING) == [[1]], timeout=60)
        # While it runs: another query, the probes and the metrics answer.
        assert collector.sql("SELECT 41 + 1") == [[42]]
        assert "segwatch_spans_received" in collector.metrics()
        assert collector.call("GET", "/api/v1/status")["requests"] == 0
        assert collector.sql(RUNNING) == [[1]]  # ... and the slow one is still running
        # The client hangs up: its query is cancelled, long before its 10-minute budget.
        slow.close()
        wait_until(lambda: collector.sql(RUNNING) == [[0]], timeout=60)
    finally:
        assert collector.stop() == 0


def test_sigterm_cancels_a_running_query_and_ends_the_process(tmp_path: Path) -> None:
    collector = _collector(tmp_path, "  max_execution_time: 10m\n")
    answer: dict[str, Any] = {}

    def wait_for_answer() -> None:
        connection = _post_sql(collector, FOREVER)
        try:
            response = connection.getresponse()
            answer["status"], answer["body"] = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            answer["error"] = exc

    waiter = threading.Thread(target=wait_for_answer)
    waiter.start()
    try:
        wait_until(lambda: collector.sql(RUNNING) == [[1]], timeout=60)
    except (AssertionError, urllib.error.URLError):
        collector.kill()
        raise
    # Bounded: the collector's own limit is 30 s; well inside this test's wait.
    assert collector.stop(timeout=60) == 0
    waiter.join(60)
    assert not waiter.is_alive()
    if "status" in answer:  # answered before the port closed: it says why
        assert answer["status"] == 503 and b"cancelled" in answer["body"]
    else:
        assert isinstance(answer["error"], (OSError, http.client.HTTPException))


@pytest.mark.parametrize("value", ["0s", "soon"])
def test_budgets_are_validated(tmp_path: Path, value: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"api:\n  max_execution_time: {value}\n")
    result = subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "validate", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "api.max_execution_time" in result.stderr
