"""What ``segwatch serve`` needs to start: its ``serve:`` config section, and TLS.

The section is validated like every other (each problem named by its YAML key);
a password variable unset at start stops the door. Over TLS (a self-signed
certificate made with the ``openssl`` CLI) clickhouse-connect and curl get in,
plain HTTP to the same port does not, and a TLS client that leaves still has
its query killed.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from waiting import wait_until

from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config import ConfigError, parse_config
from segwatch.collector.config.network import TlsConfig
from segwatch.collector.config.serve import ServeConfig, ServeUser
from segwatch.collector.serve import ClickHouseDoor

# -- the config section


def test_a_serve_section_builds_readers_and_writers_with_their_budgets() -> None:
    config = parse_config(
        "serve:\n  http:\n    endpoint: 127.0.0.1:18123\n  users:\n"
        "    analyst: {password_env: ANALYST_PW, readonly: true}\n"
        "    collector: {password_env: COLLECTOR_PW, max_concurrent_queries: 4}\n"
    )
    analyst, collector = config.serve.users
    assert config.serve.endpoint == "127.0.0.1:18123"
    assert (analyst.readonly, analyst.max_execution_time, analyst.max_memory_mib) == (
        (True, 60, 4096)
    )
    limits = (collector.readonly, collector.max_execution_time, collector.max_concurrent_queries)
    assert limits == (False, 0, 4)


def test_binding_beyond_loopback_needs_tls_and_users() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config("serve:\n  http:\n    endpoint: 0.0.0.0:8123\n")
    assert any(problem.startswith("serve.http.endpoint") for problem in refused.value.problems)
    assert "serve.http.tls and serve.users" in str(refused.value)


def test_a_user_needs_a_password_variable() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config("serve:\n  users:\n    analyst: {readonly: true}\n")
    assert any(
        problem.startswith("serve.users.analyst") and "password_env" in problem
        for problem in refused.value.problems
    )


def test_a_password_variable_unset_at_start_stops_the_door(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("T_SERVE_UNSET_PW", raising=False)
    users = (ServeUser("analyst", password_env="T_SERVE_UNSET_PW", readonly=True),)
    with pytest.raises(ValueError, match="T_SERVE_UNSET_PW") as refused:
        ClickHouseDoor(ServeConfig(endpoint="127.0.0.1:0", users=users), None)
    assert "serve.users.analyst.password_env" in str(refused.value)


# -- TLS


@dataclass
class Served:
    door: ClickHouseDoor
    own: Client
    cert: Path

    def running(self, marker: str) -> bool:
        return bool(
            self.own.query(
                "SELECT count() FROM system.processes WHERE query LIKE {m:String} "
                "AND query NOT LIKE '%system.processes%'",
                parameters={"m": f"%{marker}%"},
            ).result_rows[0][0]
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("serve-tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    location = parse_dsn(f"chdb://{directory / 'store'}")
    own = open_client(location)
    tls = TlsConfig(cert_file=str(cert), key_file=str(key))
    door = ClickHouseDoor(ServeConfig(endpoint="127.0.0.1:0", tls=tls), location.path)
    door.start()
    yield Served(door, own, cert)
    door.shutdown()
    own.close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # verify=False
def test_clickhouse_connect_and_curl_come_in_over_tls(served: Served) -> None:
    assert served.door.url.startswith("https://")
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=served.door.port, secure=True, verify=False
    )
    assert client.query("SELECT 40 + 2").result_rows == [(42,)]
    verified = subprocess.run(
        ["curl", "-sS", "--cacert", str(served.cert), f"{served.door.url}/?query=SELECT%201"],
        capture_output=True,
        timeout=60,
    )
    assert verified.stdout == b"1\n", verified.stderr


def test_plain_http_to_the_tls_port_gets_nothing(served: Served) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.door.port, timeout=30)
    try:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            connection.request("GET", "/?query=SELECT%201")
            connection.getresponse()
    finally:
        connection.close()
    # ... and the door still answers over TLS
    again = subprocess.run(
        ["curl", "-sS", "-k", f"{served.door.url}/ping"], capture_output=True, timeout=60
    )
    assert again.stdout == b"Ok.\n"


@pytest.mark.parametrize("goodbye", ["close_notify", "reset"])
def test_a_tls_client_that_leaves_has_its_query_killed(served: Served, goodbye: str) -> None:
    marker = uuid.uuid4().hex
    body = (
        f"SELECT sleepEachRow(0.1), '{marker}' FROM numbers(100) "
        "SETTINGS max_block_size = 1 FORMAT Null"
    ).encode()
    context = ssl.create_default_context(cafile=str(served.cert))
    raw = socket.create_connection(("127.0.0.1", served.door.port))
    connection = context.wrap_socket(raw, server_hostname="127.0.0.1")
    connection.sendall(
        b"POST / HTTP/1.1\r\nHost: door\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    wait_until(lambda: served.running(marker), timeout=30)
    if goodbye == "close_notify":  # a polite TLS goodbye, without waiting for the answer
        connection.setblocking(False)
        with contextlib.suppress(ssl.SSLWantReadError):
            connection.unwrap()
    connection.close()
    wait_until(lambda: not served.running(marker), timeout=5)  # ten seconds were asked for
