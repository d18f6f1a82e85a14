"""The processes the ingest benchmark measures, started on a fresh store and stopped after.

Two paths from the OTLP receiver to ClickHouse:

- :func:`embedded_path`: a ``segwatch collector`` on a fresh embedded store
  (``chdb://DIR``), found through its discovery file;
- :func:`http_path`: a ``segwatch collector`` whose ``storage.dsn`` is
  ClickHouse's HTTP interface (Native inserts over HTTP), either of a ``segwatch
  serve`` started here on a fresh embedded store, or of a server the user names.
  A collector on a server DSN writes no discovery file, so the bench picks its
  OTLP and API ports and its API token.

Each process logs to a file beside its config (a pipe nobody reads would fill
and block it); the log's end is in the error when a process does not start.
:class:`ProcessWatch` reads a process's CPU time and RSS from ``/proc``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest_payload import models_config

from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn, redact_dsn
from segwatch.collector.cli.access import ApiAccess
from segwatch.collector.config import SpoolConfig

__all__ = ["CollectorOptions", "ProcessWatch", "RunningPath", "embedded_path", "http_path"]

START_SECONDS = 120.0
"""How long a process may take to listen before the bench gives up on it."""

DISCOVERY_FILE = "segwatch-collector.json"

SEGWATCH = [sys.executable, "-m", "segwatch.collector.cli"]


@dataclass(frozen=True)
class CollectorOptions:
    """What the benchmark varies in the collector's config."""

    top_k: int = 20
    flush_calls: int = SpoolConfig().flush_calls
    histogram_accuracy: float = 0.01
    raw_calls: bool = True
    fsync_parts: bool = True
    traces: bool = True  # storage.traces.write (its default sample and exemplars)


@dataclass(frozen=True)
class ProcessWatch:
    """A process the bench started, by the name it is reported under."""

    name: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the process (all its threads) has used so far."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


@dataclass(frozen=True)
class RunningPath:
    """A collector ready for OTLP at ``otlp``, its API, and every process the bench started
    for this path (the collector first)."""

    label: str
    otlp: str
    api: ApiAccess
    processes: tuple[ProcessWatch, ...]


@contextmanager
def embedded_path(
    options: CollectorOptions, model: str, keep: Path | None = None
) -> Iterator[RunningPath]:
    """A collector on a fresh embedded store in a temporary directory, or in ``keep`` (a
    directory that must not exist yet: the store, spool, config and log stay there, to
    open after the run)."""
    with ExitStack() as stack:
        if keep is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="segwatch-bench-"))
        else:
            keep.mkdir(parents=True)
            tmp = str(keep)
        store = Path(tmp) / "store"
        config = _collector_config(Path(tmp), f"chdb://{store}", options, model)
        command = [*SEGWATCH, "collector", "--config", str(config)]
        with _started(command, Path(tmp) / "collector.log") as (process, wait):
            found = wait(lambda: _read_json(store / DISCOVERY_FILE))
            api = ApiAccess(found["api"], token=found["token"])
            yield RunningPath("embedded store", found["otlp_grpc"], api,
                              (ProcessWatch("collector", process.pid),))  # fmt: skip


@contextmanager
def http_path(options: CollectorOptions, model: str, dsn: str | None) -> Iterator[RunningPath]:
    """A collector writing through ClickHouse's HTTP interface: ``dsn``'s server (migrated
    here first), or with ``dsn`` None a ``segwatch serve`` on a fresh embedded store."""
    with tempfile.TemporaryDirectory(prefix="segwatch-bench-http-") as tmp, ExitStack() as stack:
        home = Path(tmp)
        if dsn is None:
            url, server = stack.enter_context(_served_store(home, options))
            started: tuple[ProcessWatch, ...] = (server,)
            target, label = f"{url}/segwatch", "HTTP to segwatch serve"
        else:
            _migrate(dsn)
            started, target, label = (), dsn, f"HTTP to {redact_dsn(dsn)}"
        otlp, api, collector = stack.enter_context(_server_collector(home, target, options, model))
        yield RunningPath(label, otlp, api, (collector, *started))


def _migrate(dsn: str) -> None:
    """Bring a server's store up to date, as ``segwatch migrate`` does (collectors on a
    server never migrate it)."""
    client = open_client(parse_dsn(dsn))
    try:
        applied = apply_migrations(client)
    finally:
        client.close()
    if applied:
        print(f"applied migrations on {redact_dsn(dsn)}: {', '.join(applied)}")


@contextmanager
def _served_store(home: Path, options: CollectorOptions) -> Iterator[tuple[str, ProcessWatch]]:
    """``segwatch serve`` on a fresh embedded store: its URL (from the discovery file it
    writes once the port is bound; it migrated the store before) and the process."""
    store = home / "served-store"
    config = home / "serve.yaml"
    config.write_text(
        f"storage:\n  dsn: chdb://{store}\n"
        f"  fsync_parts: {_yaml_bool(options.fsync_parts)}\n"
        "serve:\n  http:\n    endpoint: 127.0.0.1:0\n"
    )
    command = [*SEGWATCH, "serve", "--config", str(config)]
    with _started(command, home / "serve.log") as (process, wait):
        found = wait(lambda: _read_json(store / DISCOVERY_FILE))
        yield str(found["serve"]), ProcessWatch("serve", process.pid)


@contextmanager
def _server_collector(
    home: Path, dsn: str, options: CollectorOptions, model: str
) -> Iterator[tuple[str, ApiAccess, ProcessWatch]]:
    """A collector on a server DSN, on ports picked here; ready once ``/readyz`` says it
    can take data (the store reachable and migrated)."""
    otlp, api_address = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    config = _collector_config(home, dsn, options, model, endpoints=(otlp, api_address))
    token = secrets.token_hex(16)
    command = [*SEGWATCH, "collector", "--config", str(config)]
    env = {"SEGWATCH_API_TOKEN": token}
    with _started(command, home / "collector.log", env) as (process, wait):
        wait(lambda: _ready(f"http://{api_address}"))
        yield (
            otlp,
            ApiAccess(f"http://{api_address}", token=token),
            ProcessWatch("collector", process.pid),
        )


def _collector_config(
    home: Path,
    dsn: str,
    options: CollectorOptions,
    model: str,
    endpoints: tuple[str, str] = ("127.0.0.1:0", "127.0.0.1:0"),
) -> Path:
    config = home / "collector.yaml"
    config.write_text(
        f"storage:\n  dsn: {json.dumps(dsn)}\n"  # a JSON string is a YAML string
        f"  histogram_accuracy: {options.histogram_accuracy}\n"
        f"  raw_calls: {_yaml_bool(options.raw_calls)}\n"
        f"  fsync_parts: {_yaml_bool(options.fsync_parts)}\n"
        f"  traces:\n    write: {_yaml_bool(options.traces)}\n"
        f"  spool:\n    path: {home / 'spool'}\n"
        f"    flush_calls: {options.flush_calls}\n"
        f"    max_pending_calls: {2 * options.flush_calls}\n"
        f"receiver:\n  grpc:\n    endpoint: {endpoints[0]}\n"
        f"api:\n  endpoint: {endpoints[1]}\n"
        "scheduler:\n  enabled: false\n" + models_config(model, options.top_k)
    )
    return config


Waiter = Callable[[Callable[[], Any]], Any]


@contextmanager
def _started(
    command: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Waiter]]:
    """``command`` as a subprocess logging to ``log_path``, with a function that waits until
    a condition is true (and returns its value), failing with the log's end if the process
    ends first; SIGTERM and wait on the way out."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log,
                                   env={**os.environ, **(env or {})})  # fmt: skip

    def wait(condition: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + START_SECONDS
        while not (value := condition()):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{log_path.stem} did not start:\n{tail}")
            time.sleep(0.05)
        return value

    try:
        yield process, wait
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _read_json(path: Path) -> dict[str, Any] | None:
    """The discovery file once it is there whole (it is renamed into place)."""
    try:
        found: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found


def _ready(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _free_port() -> int:
    """A loopback port nothing listens on now, for a process that must bind one we know."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _yaml_bool(value: bool) -> str:
    return "true" if value else "false"
