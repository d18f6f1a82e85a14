"""Inserts into an embedded store go through chdb's streaming insert, as a query would.

Real engine: the rows land, a deduplication token counts, an engine error is
clickhouse-connect's ``DatabaseError`` with the engine's code, an encoding
error is the encoder's own, and after either the client goes on working.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, ProgrammingError

from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.store.embedded_insert import stream_insert
from segwatch.collector.store.native import native_chunks
from segwatch.collector.store.rows import insert_blocks


def _native(rows: list[tuple[int, str]]) -> bytes:
    """A Native block of (a UInt32, b String)."""
    columns = [[a for a, _ in rows], [b for _, b in rows]]
    return b"".join(native_chunks(("a", "b"), ("UInt32", "String"), columns))


@pytest.fixture
def table(client: Client) -> Iterator[str]:
    client.command("CREATE TABLE streamed (a UInt32, b String) ENGINE = MergeTree ORDER BY a")
    yield "streamed"
    client.command("DROP TABLE streamed")


def _count(client: Client) -> int:
    return int(client.query("SELECT count() FROM streamed").result_rows[0][0])


def test_an_embedded_client_inserts_without_the_temporary_file_path(
    client: Client, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_raw_insert(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedded client took clickhouse-connect's file path")

    monkeypatch.setattr(client, "raw_insert", no_raw_insert)
    block = _native([(1, "x"), (2, "y")])
    insert_blocks(client, table, ["a", "b"], [[block[:5], block[5:]], _native([(3, "z")])])
    assert client.query("SELECT a, b FROM streamed ORDER BY a").result_rows == [
        (1, "x"), (2, "y"), (3, "z"),
    ]  # fmt: skip


def test_a_deduplication_token_counts(client: Client, table: str) -> None:
    client.command("ALTER TABLE streamed MODIFY SETTING non_replicated_deduplication_window = 10")
    settings = {"insert_deduplication_token": "chunk-1"}
    for _ in range(2):
        insert_blocks(client, table, ["a", "b"], [_native([(1, "x")])], settings)
    assert _count(client) == 1


def test_an_engine_error_is_the_clients_error_and_the_client_goes_on(
    client: Client, table: str
) -> None:
    with pytest.raises(DatabaseError) as refused:
        insert_blocks(client, table, ["a", "no_such_column"], [_native([(1, "x")])])
    assert refused.value.code == 16  # NO_SUCH_COLUMN_IN_TABLE
    with pytest.raises(DatabaseError, match=r"Cannot read all data"):
        insert_blocks(client, table, ["a", "b"], [_native([(1, "x")])[:-3]])  # cut short
    insert_blocks(client, table, ["a", "b"], [_native([(7, "ok")])])
    assert client.query("SELECT a FROM streamed").result_rows == [(7,)]


def test_an_encoding_error_is_raised_as_it_is_and_stores_nothing(
    client: Client, table: str
) -> None:
    def pieces() -> Iterator[bytes]:
        yield _native([(1, "x")])
        raise ValueError("column b: 2 values for 1 rows")

    with pytest.raises(ValueError, match="column b"):
        insert_blocks(client, table, ["a", "b"], [pieces()])
    assert _count(client) == 0
    insert_blocks(client, table, ["a", "b"], [_native([(2, "y")])])
    assert _count(client) == 1


def test_a_closed_client_says_so_as_for_any_call(store_dsn: str) -> None:
    closed = open_client(parse_dsn(store_dsn))
    closed.close()
    with pytest.raises(ProgrammingError, match="closed"):
        insert_blocks(closed, "streamed", ["a", "b"], [_native([(1, "x")])])


def test_a_client_without_an_embedded_engine_is_left_to_the_usual_path() -> None:
    """A stand-in, not a real HTTP client: the decision reads only the backend's shape,
    and a server to answer the usual path is what other tests (test_server_path) run."""
    read: list[bytes] = []

    def pieces() -> Iterator[bytes]:
        read.append(b"x")
        yield b"x"

    class ServerClient:  # what stream_insert looks for is absent, as on an HTTP client
        database = "segwatch"

    assert stream_insert(ServerClient(), "t", ["a"], pieces(), {}) is False  # type: ignore[arg-type]
    assert read == []
