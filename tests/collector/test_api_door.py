"""The local API's door, on a real collector process: token, Host, body type, uploads.

Each check is what a stranger on the same machine, or a web page the
machine's browser opens, would try: a request without the token, a request
for a rebound DNS name (its own Host), a form POST, a baseline read from a
path of the attacker's choosing. The collector runs as ``segwatch collector``
in a subprocess; the requests are plain HTTP to its API.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from waiting import wait_until

SEGWATCH = [sys.executable, "-m", "segwatch.collector.cli"]
TRAINING = "amount,country\n1.5,BR\n20,US\n300,US\n"


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    store: Path
    config: Path
    info: dict[str, Any]

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.info["api"])
        assert parts.hostname is not None and parts.port is not None
        return parts.hostname, parts.port

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = "discovered",
    ) -> tuple[int, Any]:
        """One request with exactly these headers (plus the token unless ``token`` is None)."""
        host, port = self.address
        connection = http.client.HTTPConnection(host, port, timeout=60)
        sent = dict(headers or {})
        if token is not None:
            value = self.info.get("token", "") if token == "discovered" else token
            sent.setdefault("Authorization", f"Bearer {value}")
        try:
            connection.putrequest(method, path, skip_host="Host" in sent)
            if body is not None:
                sent.setdefault("Content-Length", str(len(body)))
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data.decode()

    def sql(self, query: str) -> list[list[Any]]:
        code, answer = self.request("POST", "/api/v1/sql", json.dumps({"query": query}).encode(),
                                    {"Content-Type": "application/json"})  # fmt: skip
        assert code == 200, answer
        return list(answer["rows"])


def _config(tmp_path: Path, receiver: str = "endpoint: 127.0.0.1:0") -> Path:
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"storage:\n  dsn: chdb://{tmp_path / 'store'}\n"
        f"receiver:\n  grpc:\n    {receiver}\n"
        "api:\n  endpoint: 127.0.0.1:0\nscheduler:\n  enabled: false\n"
    )
    return config


def _start(config: Path, store: Path, env: dict[str, str] | None = None) -> Running:
    discovery = store / "segwatch-collector.json"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
    log = open(config.parent / "collector.log", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen([*SEGWATCH, "collector", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=log,
                               env={**environment, **(env or {})})  # fmt: skip
    log.close()
    wait_until(lambda: discovery.exists() or process.poll() is not None, timeout=120)
    assert process.poll() is None, (config.parent / "collector.log").read_text()
    return Running(process, store, config, json.loads(discovery.read_text()))


def _stop(running: Running) -> None:
    running.process.send_signal(signal.SIGTERM)
    try:
        running.process.wait(timeout=120)
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    collector = _start(_config(tmp_path), tmp_path / "store")
    try:
        yield collector
    finally:
        _stop(collector)


def test_the_discovery_file_is_private_and_carries_a_random_token(running: Running) -> None:
    discovery = running.store / "segwatch-collector.json"
    assert stat.S_IMODE(discovery.stat().st_mode) == 0o600
    assert len(running.info["token"]) >= 32
    assert running.info["api"].startswith("http://127.0.0.1:")


def test_every_api_request_needs_the_token_even_on_loopback(running: Running) -> None:
    code, answer = running.request("GET", "/api/v1/status", token=None)
    assert code == 401 and "bearer token" in answer["error"]
    assert running.request("GET", "/api/v1/status", token="guess")[0] == 401
    code, answer = running.request("GET", "/api/v1/status")
    assert code == 200 and answer["pid"] == running.process.pid
    body = json.dumps({"query": "SELECT 1"}).encode()
    json_type = {"Content-Type": "application/json"}
    assert running.request("POST", "/api/v1/sql", body, json_type, token=None)[0] == 401
    # Probes and scrapers need none; they reveal no data.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert running.request("GET", path, token=None)[0] == 200, path


def test_a_host_that_is_not_the_api_address_is_refused(running: Running) -> None:
    """DNS rebinding: a page's own name, resolved to 127.0.0.1, arrives as its Host."""
    host, port = running.address
    for foreign in (f"attacker.example:{port}", f"127.0.0.1.nip.io:{port}", "127.0.0.1:1", ""):
        code, answer = running.request("GET", "/api/v1/status", headers={"Host": foreign})
        assert code == 403, foreign
        assert "not this API's address" in answer["error"]
    for local in (f"{host}:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert running.request("GET", "/api/v1/status", headers={"Host": local})[0] == 200


def test_a_body_that_is_not_json_is_refused(running: Running) -> None:
    """HTML forms post form encodings or text/plain without a CORS preflight: never accepted."""
    body = json.dumps({"query": "SELECT 1"}).encode()
    for kind in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data", None):
        headers = {"Content-Type": kind} if kind else {}
        code, answer = running.request("POST", "/api/v1/sql", body, headers)
        assert code == 415, kind
        assert "application/json" in answer["error"]
    code, answer = running.request("POST", "/api/v1/sql", body,
                                   {"Content-Type": "application/json; charset=utf-8"})  # fmt: skip
    assert code == 200 and answer["rows"] == [[1]]


def test_a_baseline_is_uploaded_as_data_never_read_from_a_path(
    running: Running, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.csv"  # a file the collector can read and the client names
    secret.write_text("password\n4242\n")
    as_path = {"path": str(secret), "model": "fraud", "version": "", "name": "training"}
    code, answer = running.request("POST", "/api/v1/baseline", json.dumps(as_path).encode(),
                                   {"Content-Type": "application/json"})  # fmt: skip
    assert code == 415 and "reads no file paths" in answer["error"]
    code, answer = running.request("POST", f"/api/v1/baseline?model=fraud&path={secret}",
                                   TRAINING.encode(), {"Content-Type": "text/csv"})  # fmt: skip
    assert code == 400 and "reads no file paths" in answer["error"]
    assert running.sql("SELECT count() FROM ml_baseline_aggregates") == [[0]]

    # The file's bytes as the body: loaded like any training set.
    code, answer = running.request("POST", "/api/v1/baseline?model=fraud&version=1&name=upload",
                                   TRAINING.encode(), {"Content-Type": "text/csv"})  # fmt: skip
    assert code == 200 and answer == {"rows": 3}
    # The CLI streams the file the same way (it has the store locked: through the API).
    training = tmp_path / "train.csv"
    training.write_text(TRAINING)
    result = subprocess.run([*SEGWATCH, "baseline", str(training), "--model", "fraud",
                             "--config", str(running.config)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "loaded 3 rows" in result.stdout
    assert "(through the collector at" in result.stderr
    rows = running.sql(
        "SELECT baseline_name, model_version, sum(sampled) FROM ml_baseline_aggregates "
        "WHERE model_name = 'fraud' AND segment_dim = '__all__' AND quantity = 'feature.amount' "
        "GROUP BY baseline_name, model_version ORDER BY baseline_name"
    )
    assert rows == [["training", "", 3], ["upload", "1", 3]]
    leaked = "SELECT count() FROM ml_baseline_aggregates WHERE quantity LIKE '%password%'"
    assert running.sql(leaked) == [[0]]
    # A broken upload is refused with the reader's reason, naming no temporary file.
    code, answer = running.request("POST", "/api/v1/baseline?model=fraud",
                                   b"a,b\n1\n", {"Content-Type": "text/csv"})  # fmt: skip
    assert code == 400 and answer["error"].startswith("the uploaded file:2:")


def test_the_token_comes_from_the_environment_when_set(tmp_path: Path) -> None:
    token = "env-token-0123456789abcdef-0123456789"
    collector = _start(_config(tmp_path), tmp_path / "store", {"SEGWATCH_API_TOKEN": token})
    try:
        assert collector.info.get("token") == token
        assert collector.request("GET", "/api/v1/status", token=token)[0] == 200
    finally:
        _stop(collector)


def test_the_cli_sends_the_token_only_to_loopback(tmp_path: Path) -> None:
    """A discovery file naming another machine (planted, or stale) is not trusted."""
    store = tmp_path / "store"
    store.mkdir()
    planted = {"pid": os.getpid(), "api": "http://collector.invalid:4320", "token": "x"}
    (store / "segwatch-collector.json").write_text(json.dumps(planted))
    config = _config(tmp_path)
    result = subprocess.run([*SEGWATCH, "sql", "SELECT 1", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "neither a loopback address nor the config's api.endpoint" in line
    assert "not sending it the token" in line


def test_the_receiver_refuses_to_listen_beyond_loopback_unprotected(tmp_path: Path) -> None:
    config = _config(tmp_path, receiver="endpoint: 0.0.0.0:0")
    result = subprocess.run([*SEGWATCH, "collector", "--config", str(config)],
                            capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items()
                                 if not k.startswith("SEGWATCH_")})  # fmt: skip
    assert result.returncode == 2  # a configuration refusal (README: exit codes)
    assert "would take data from other machines with neither TLS nor a token" in result.stderr
    assert "receiver.grpc.insecure: true" in result.stderr
    # Said explicitly, it starts.
    config = _config(tmp_path, receiver="endpoint: 0.0.0.0:0\n    insecure: true")
    collector = _start(config, tmp_path / "store")
    try:
        assert collector.info["otlp_grpc"].startswith("0.0.0.0:")
    finally:
        _stop(collector)
