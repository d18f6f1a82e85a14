"""What one client can hold of the door: connections and sessions past their caps are refused
(each holds a thread, or an engine handle)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import clickhouse_connect
import pytest
from waiting import wait_until

from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config.serve import ServeConfig
from segwatch.collector.serve import ClickHouseDoor


def test_connections_and_sessions_past_their_caps_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segwatch.collector.serve import engine, listener

    monkeypatch.setattr(listener, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(engine, "MAX_SESSIONS", 2)
    location = parse_dsn(f"chdb://{tmp_path / 'store'}")
    own = open_client(location)
    door = ClickHouseDoor(ServeConfig(endpoint="127.0.0.1:0"), location.path)
    door.start()
    try:
        held = [socket.create_connection(("127.0.0.1", door.port)) for _ in range(2)]
        with socket.create_connection(("127.0.0.1", door.port), timeout=30) as third:
            third.sendall(b"GET /ping HTTP/1.1\r\nHost: door\r\n\r\n")
            assert third.recv(100) == b""  # closed unanswered
        for connection in held:
            connection.close()
        wait_until(lambda: _pings(door.port), timeout=30)  # their threads ended
        client = clickhouse_connect.get_client(host="127.0.0.1", port=door.port)
        for session in ("s1", "s2"):
            assert client.command("SELECT 1", settings={"session_id": session}) == 1
        with pytest.raises(Exception, match="2 sessions are open"):
            client.command("SELECT 1", settings={"session_id": "s3"})
        assert client.command("SELECT 1", settings={"session_id": "s1"}) == 1
    finally:
        door.shutdown()
        own.close()


def _pings(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 5) as probe:
        probe.sendall(b"GET /ping HTTP/1.1\r\nHost: door\r\nConnection: close\r\n\r\n")
        return probe.recv(100).startswith(b"HTTP/1.1 200")
    return False
