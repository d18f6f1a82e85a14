"""``segwatch serve``'s ClickHouse HTTP door, through the clients that use it for real.

clickhouse-connect's HTTP client: queries, inserts in Native with each
compression, query parameters in the URL and as form data, deduplication
tokens, sessions, errors (and raw ``http.client`` where the status and headers
matter), and a collector's own path: migrations through an ``http://`` DSN.
The bytes on the wire are :mod:`test_serve_wire`'s.

One door and one store for the module (chdb holds one store directory per
process); every test writes its own tables.
"""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import clickhouse_connect
import pytest
from clickhouse_connect.driver.binding import use_form_encoding
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from waiting import wait_until

from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config.serve import ServeConfig
from segwatch.collector.serve import ClickHouseDoor
from segwatch.collector.serve.errors import CODES


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


@dataclass
class Served:
    door: ClickHouseDoor
    own: Client  # the store's own (embedded) client, beside the door

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


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    location = parse_dsn(f"chdb://{tmp_path_factory.mktemp('serve') / 'store'}")
    own = open_client(location)
    assert location.path is not None
    door = ClickHouseDoor(ServeConfig(endpoint="127.0.0.1:0"), location.path)
    door.start()
    yield Served(door, own)
    door.shutdown()
    own.close()


def _table(served: Served, columns: str = "a UInt32, s String", settings: str = "") -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    served.own.command(
        f"CREATE TABLE segwatch.{name} ({columns}) ENGINE = MergeTree ORDER BY tuple() {settings}"
    )
    return name


def _rows(served: Served, table: str) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in served.own.query(f"SELECT * FROM segwatch.{table} ORDER BY 1").result_rows
    ]


# -- queries, inserts, parameters


def test_a_query_answers_rows_with_their_names_and_types(served: Served) -> None:
    result = served.client().query(
        "SELECT toUInt8(7) AS n, 'día' AS s, [toUInt16(1), 2] AS l, toDate('2024-01-02') AS d"
    )
    assert result.column_names == ("n", "s", "l", "d")
    assert [t.name for t in result.column_types] == ["UInt8", "String", "Array(UInt16)", "Date"]
    n, s, array, d = result.result_rows[0]
    assert (n, s, array, d.isoformat()) == (7, "día", [1, 2], "2024-01-02")


@pytest.mark.parametrize("compress", [True, "lz4", "zstd", "gzip", False])
def test_native_inserts_arrive_with_each_compression(served: Served, compress: Any) -> None:
    table = _table(served)
    rows = [[i, f"row {i} ✓"] for i in range(2000)]
    summary = served.client(compress=compress).insert(table, rows, column_names=["a", "s"])
    assert summary.written_rows == 2000
    assert _rows(served, table) == [tuple(row) for row in rows]


def test_query_parameters_in_the_url_and_as_form_data(served: Served) -> None:
    client = served.client()
    short = client.query("SELECT {n:UInt32} + 1, {s:String}", parameters={"n": 41, "s": "a'b"})
    assert short.result_rows == [(42, "a'b")]
    long_value = "x\ty'z" * 2000
    sql = "SELECT length({v:String}), {v:String}"
    assert use_form_encoding(sql, {"param_v": long_value})  # clickhouse-connect sends a form
    assert client.query(sql, parameters={"v": long_value}).result_rows == [
        (len(long_value), long_value)
    ]


def test_an_insert_repeated_with_its_deduplication_token_stores_its_rows_once(
    served: Served,
) -> None:
    table = _table(served, settings="SETTINGS non_replicated_deduplication_window = 100")
    client, rows = served.client(), [[1, "a"], [2, "b"]]
    for token in ("batch-1", "batch-1", "batch-2"):
        client.insert(
            table, rows, column_names=["a", "s"], settings={"insert_deduplication_token": token}
        )
    assert served.own.query(f"SELECT count() FROM segwatch.{table}").result_rows == [(4,)]


# -- sessions


def test_a_temporary_table_lives_in_its_session_only(served: Served) -> None:
    first, other = served.client(session_id="s-temp-1"), served.client(session_id="s-temp-2")
    first.command("CREATE TEMPORARY TABLE scratch (x UInt8)")
    first.command("INSERT INTO scratch VALUES (1), (2)")
    assert first.query("SELECT count() FROM scratch").result_rows == [(2,)]
    with pytest.raises(DatabaseError) as refused:
        other.query("SELECT count() FROM scratch")
    assert refused.value.code == 60


def test_a_session_runs_one_request_at_a_time(served: Served) -> None:
    marker = uuid.uuid4().hex
    slow = (
        f"SELECT sleepEachRow(0.1), '{marker}' FROM numbers(100) "
        "SETTINGS max_block_size = 1 FORMAT Null"
    )
    first = threading.Thread(
        target=served.request, args=("POST", {"session_id": "s-busy"}, slow.encode())
    )
    first.start()
    try:
        wait_until(lambda: _running(served, marker), timeout=30)
        second = served.request("POST", {"query": "SELECT 1", "session_id": "s-busy"})
        assert second.status == 500
        assert second.headers["X-ClickHouse-Exception-Code"] == "373"
        assert b"(SESSION_IS_LOCKED)" in second.body
    finally:
        served.own.command(
            f"KILL QUERY WHERE query LIKE '%{marker}%' AND query NOT LIKE '%system.processes%' SYNC"
        )
        first.join(30)
    assert served.request("POST", {"query": "SELECT 1", "session_id": "s-busy"}).body == b"1\n"


def test_session_check_refuses_an_unknown_session(served: Served) -> None:
    answer = served.request(
        "POST", {"query": "SELECT 1", "session_id": "s-never", "session_check": "1"}
    )
    assert answer.status == 500
    assert answer.headers["X-ClickHouse-Exception-Code"] == "372"


def test_url_settings_last_one_request_while_set_lasts_the_session(served: Served) -> None:
    def threads(**params: str) -> bytes:
        return served.request(
            "POST",
            {"query": "SELECT getSetting('max_threads')", "session_id": "s-settings", **params},
        ).body

    default = threads()
    assert threads(max_threads="3") == b"3\n"
    assert threads() == default
    served.request("POST", {"query": "SET max_threads = 5", "session_id": "s-settings"})
    assert threads() == b"5\n"
    assert threads(max_threads="2") == b"2\n"
    assert threads() == b"5\n"


# -- errors


def test_an_unknown_table_is_clickhouse_connects_database_error_60(served: Served) -> None:
    with pytest.raises(DatabaseError) as refused:
        served.client().query("SELECT * FROM no_such_table")
    assert refused.value.code == 60
    answer = served.request("POST", {"database": "segwatch"}, b"SELECT * FROM no_such_table")
    assert (answer.status, answer.headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert answer.body.startswith(b"Code: 60. DB::Exception: ")
    version = served.own.query("SELECT version()").result_rows[0][0]
    assert answer.body.endswith(f"(UNKNOWN_TABLE) (version {version})\n".encode())


def test_a_syntax_error_is_code_62_and_a_bad_request(served: Served) -> None:
    answer = served.request("POST", body=b"SELEC 1")
    assert (answer.status, answer.headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    assert b"(SYNTAX_ERROR)" in answer.body


def test_the_doors_own_error_codes_are_the_engines(served: Served) -> None:
    names = served.own.query(
        "SELECT code, errorCodeToName(code) FROM (SELECT arrayJoin({codes:Array(UInt32)}) AS code)",
        parameters={"codes": list(CODES.values())},
    ).result_rows
    assert {name: code for code, name in names} == CODES


def test_a_refusal_before_the_body_is_read_closes_the_connection_cleanly(served: Served) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.door.port, timeout=60)
    try:
        connection.request("POST", "/no/such/handle", body=b"SELECT 1")
        refused = connection.getresponse()
        assert refused.status == 404 and refused.headers["Connection"] == "close"
        refused.read()
        connection.request("POST", "/", body=b"SELECT 2")  # http.client reconnects
        answer = connection.getresponse()
        assert (answer.status, answer.read()) == (200, b"2\n")
    finally:
        connection.close()


# -- a collector's path


def test_migrations_apply_through_an_http_dsn(served: Served) -> None:
    client = open_client(parse_dsn(f"{served.door.url}/segwatch_over_http"))
    try:
        applied = apply_migrations(client)
        assert applied and apply_migrations(client) == []
    finally:
        client.close()
    tables = served.own.query(
        "SELECT count() FROM system.tables WHERE database = 'segwatch_over_http'"
    ).result_rows[0][0]
    assert tables >= len(applied)


def _running(served: Served, marker: str) -> bool:
    found = served.own.query(
        "SELECT count() FROM system.processes WHERE query LIKE {m:String} "
        "AND query NOT LIKE '%system.processes%'",
        parameters={"m": f"%{marker}%"},
    ).result_rows[0][0]
    return bool(found)
