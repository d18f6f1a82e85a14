"""A real ``segwatch collector`` subprocess for tests, and calls to its local API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from waiting import wait_until


class CollectorProcess:
    """``segwatch collector --config CONFIG`` on the embedded store ``store``.

    ``env`` adds variables (e.g. ``SEGWATCH_FAILPOINTS``). Its log goes to
    ``collector.log`` beside the store. With ``started=False`` the constructor
    does not wait for it to listen (a failpoint may end it while it replays).

    On a server's store (``storage.dsn: http://...``) there is no discovery
    file: ``store`` is then the directory for the log, and ``endpoints`` the
    (OTLP, API) addresses the config binds, the API's answering ``/healthz``
    telling it started.
    """

    def __init__(
        self,
        config: Path,
        store: Path,
        env: dict[str, str] | None = None,
        started: bool = True,
        endpoints: tuple[str, str] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.log_path = (store if endpoints else store.parent) / "collector.log"
        discovery = store / "segwatch-collector.json"
        discovery.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "segwatch.collector.cli", "collector", "--config",
                 str(config)],
                stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **(env or {})},
            )  # fmt: skip
        self.api = self.otlp = ""
        self.token: str | None = None
        if endpoints is not None:
            self.otlp, self.api = endpoints[0], f"http://{endpoints[1]}"
            self.token = (env or {}).get("SEGWATCH_API_TOKEN")
            if started:
                wait_until(lambda: self._healthy() or self.process.poll() is not None, 120)
                assert self.process.poll() is None, f"the collector did not start:\n{self.log()}"
        elif started:
            self._wait_started(discovery)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api}/healthz", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _wait_started(self, discovery: Path) -> None:
        wait_until(lambda: discovery.exists() or self.process.poll() is not None, timeout=120)
        assert self.process.poll() is None, f"the collector did not start:\n{self.log()}"
        found = json.loads(discovery.read_text())
        self.api = found["api"]
        self.otlp = found["otlp_grpc"]
        self.token = found.get("token")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One API request; the JSON answer (an HTTP error raises ``HTTPError``)."""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.api + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers=headers,
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())

    def sql(self, query: str) -> list[list[Any]]:
        return list(self.call("POST", "/api/v1/sql", {"query": query})["rows"])

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.api}/metrics", timeout=30) as response:
            return str(response.read().decode())

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM, and the exit code once it is gone. A collector still there after
        ``timeout`` is killed and the test fails with its log (what it was doing)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the collector did not stop {timeout:.0f} s after SIGTERM; its log:\n{self.log()}"
            ) from None

    def wait_dead(self, timeout: float = 120) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)


def api_dies(collector: CollectorProcess, query: str, timeout: float = 120) -> bool:
    """Send a query that makes the collector flush; True if the process died answering it."""
    with contextlib.suppress(urllib.error.URLError, ConnectionError, OSError):
        collector.sql(query)
    try:
        collector.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for a process that must bind a
    port the test knows before it starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
