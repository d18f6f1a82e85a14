"""A ``segwatch serve`` door on a store of its own, for the tests that talk to it as clients do.

One door and one store per test module (chdb holds one store directory per
process): :func:`open_door` yields a :class:`Door` with the store's own
embedded client beside it, clickhouse-connect clients, raw requests and curl.
"""

from __future__ import annotations

import http.client
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config.serve import ServeConfig
from segwatch.collector.serve import ClickHouseDoor


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


@dataclass
class Door:
    door: ClickHouseDoor
    own: Client  # the store's own (embedded) client, beside the door
    path: str

    def client(self, **options: Any) -> Client:
        return clickhouse_connect.get_client(
            host="127.0.0.1", port=self.door.port, database="segwatch", **options
        )

    def request(
        self,
        method: str,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.door.port, timeout=60)
        try:
            target = "/" + ("?" + urlencode(params) if params else "")
            connection.request(method, target, body=body, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()

    def curl(self, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["curl", "-sS", *args], input=data, capture_output=True, timeout=60)

    def table(self, columns: str = "a UInt32, s String", settings: str = "") -> str:
        """A new table of the store (a name of its own), made by the store's own client."""
        name = f"t_{uuid.uuid4().hex[:10]}"
        self.own.command(
            f"CREATE TABLE segwatch.{name} ({columns}) ENGINE = MergeTree ORDER BY tuple() "
            f"{settings}"
        )
        return name

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        query = f"SELECT * FROM segwatch.{table} ORDER BY 1"
        return [tuple(row) for row in self.own.query(query).result_rows]


@contextmanager
def open_door(directory: Path) -> Iterator[Door]:
    """A door on a new store in ``directory``, with no users (``default``, loopback)."""
    location = parse_dsn(f"chdb://{directory / 'store'}")
    own = open_client(location)
    assert location.path is not None
    door = ClickHouseDoor(ServeConfig(endpoint="127.0.0.1:0"), location.path)
    door.start()
    try:
        yield Door(door, own, location.path)
    finally:
        door.shutdown()
        own.close()
