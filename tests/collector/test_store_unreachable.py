"""A collector whose store is unreachable at start still takes data, into its spool.

The store here is an embedded one held by another process (an analyst's
session, a baseline load) when the collector starts: the real engine refuses
a second process. The collector starts anyway, acknowledges into the spool,
says in ``/readyz`` why it is degraded, and flushes everything once the other
process lets the store go.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from collector_process import CollectorProcess
from test_exactly_once import COUNTS, ROWS, _config, _send_batches
from waiting import wait_until

HOLD = (
    "import sys\n"
    "from segwatch.clickhouse.store import open_client, parse_dsn\n"
    "client = open_client(parse_dsn(sys.argv[1]))\n"
    "print('holding', flush=True)\n"
    "sys.stdin.read()\n"
)


@contextlib.contextmanager
def _held(store: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another process holding the embedded store until its stdin closes (or it is killed)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, f"chdb://{store}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"holding\n"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=60)


def _readiness(collector: CollectorProcess) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"{collector.api}/readyz", timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_collector_acknowledges_into_the_spool_until_its_store_is_back(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    with _held(store) as holder:
        collector = CollectorProcess(_config(tmp_path, store, flush_interval=0.1), store)
        try:
            _send_batches(collector.otlp, "fraud", spans=3)  # acknowledged: spooled
            code, answer = _readiness(collector)
            assert code == 503
            assert "the store is unreachable" in str(answer["problems"])
            # Said in one line naming the holder, never the engine's own refusal text.
            log = collector.log()
            assert "is open in another process (pid " in log
            assert "DB::Exception" not in log and "Code: 76" not in log
            assert holder.stdin is not None
            holder.stdin.close()  # the other process lets the store go
            assert holder.wait(timeout=60) == 0
            wait_until(lambda: _readiness(collector)[0] == 200, timeout=60)
            assert collector.sql(COUNTS.format(model="fraud")) == [[3 * ROWS, 3 * ROWS]]
        finally:
            assert collector.stop() == 0


def test_sigterm_with_the_store_down_says_what_stays_in_the_spool(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = _config(tmp_path, store, flush_interval=0.1)
    with _held(store):
        collector = CollectorProcess(config, store)
        try:
            _send_batches(collector.otlp, "fraud", spans=2)
        finally:
            code = collector.stop()
        # Not 0: acknowledged calls did not reach the store; they wait in the spool.
        assert code == 75
        assert f"{2 * ROWS} acknowledged model calls stay in the spool" in collector.log()
    collector = CollectorProcess(config, store)  # the store is free now: the spool is replayed
    try:
        assert collector.sql(COUNTS.format(model="fraud")) == [[2 * ROWS, 2 * ROWS]]
    finally:
        assert collector.stop() == 0
