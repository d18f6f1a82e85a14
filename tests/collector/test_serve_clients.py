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
from typing import Any

import pytest
from clickhouse_connect.driver.binding import use_form_encoding
from clickhouse_connect.driver.exceptions import DatabaseError
from serve_door import Door, open_door
from waiting import wait_until

from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.serve.errors import CODES


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with open_door(tmp_path_factory.mktemp("serve")) as door:
        yield door


# -- queries, inserts, parameters


def test_a_query_answers_rows_with_their_names_and_types(served: Door) -> None:
    result = served.client().query(
        "SELECT toUInt8(7) AS n, 'día' AS s, [toUInt16(1), 2] AS l, toDate('2024-01-02') AS d"
    )
    assert result.column_names == ("n", "s", "l", "d")
    assert [t.name for t in result.column_types] == ["UInt8", "String", "Array(UInt16)", "Date"]
    n, s, array, d = result.result_rows[0]
    assert (n, s, array, d.isoformat()) == (7, "día", [1, 2], "2024-01-02")


@pytest.mark.parametrize("compress", [True, "lz4", "zstd", "gzip", False])
def test_native_inserts_arrive_with_each_compression(served: Door, compress: Any) -> None:
    table = served.table()
    rows = [[i, f"row {i} ✓"] for i in range(2000)]
    summary = served.client(compress=compress).insert(table, rows, column_names=["a", "s"])
    assert summary.written_rows == 2000
    assert served.rows(table) == [tuple(row) for row in rows]


def test_query_parameters_in_the_url_and_as_form_data(served: Door) -> None:
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
    served: Door,
) -> None:
    table = served.table(settings="SETTINGS non_replicated_deduplication_window = 100")
    client, rows = served.client(), [[1, "a"], [2, "b"]]
    for token in ("batch-1", "batch-1", "batch-2"):
        client.insert(
            table, rows, column_names=["a", "s"], settings={"insert_deduplication_token": token}
        )
    assert served.own.query(f"SELECT count() FROM segwatch.{table}").result_rows == [(4,)]


# -- sessions


def test_a_temporary_table_lives_in_its_session_only(served: Door) -> None:
    first, other = served.client(session_id="s-temp-1"), served.client(session_id="s-temp-2")
    first.command("CREATE TEMPORARY TABLE scratch (x UInt8)")
    first.command("INSERT INTO scratch VALUES (1), (2)")
    assert first.query("SELECT count() FROM scratch").result_rows == [(2,)]
    with pytest.raises(DatabaseError) as refused:
        other.query("SELECT count() FROM scratch")
    assert refused.value.code == 60


def test_a_session_runs_one_request_at_a_time(served: Door) -> None:
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


def test_session_check_refuses_an_unknown_session(served: Door) -> None:
    answer = served.request(
        "POST", {"query": "SELECT 1", "session_id": "s-never", "session_check": "1"}
    )
    assert answer.status == 500
    assert answer.headers["X-ClickHouse-Exception-Code"] == "372"


def test_url_settings_last_one_request_while_set_lasts_the_session(served: Door) -> None:
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


def test_an_unknown_table_is_clickhouse_connects_database_error_60(served: Door) -> None:
    with pytest.raises(DatabaseError) as refused:
        served.client().query("SELECT * FROM no_such_table")
    assert refused.value.code == 60
    answer = served.request("POST", {"database": "segwatch"}, b"SELECT * FROM no_such_table")
    assert (answer.status, answer.headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert answer.body.startswith(b"Code: 60. DB::Exception: ")
    version = served.own.query("SELECT version()").result_rows[0][0]
    assert answer.body.endswith(f"(UNKNOWN_TABLE) (version {version})\n".encode())


def test_a_syntax_error_is_code_62_and_a_bad_request(served: Door) -> None:
    answer = served.request("POST", body=b"SELEC 1")
    assert (answer.status, answer.headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    assert b"(SYNTAX_ERROR)" in answer.body


def test_the_doors_own_error_codes_are_the_engines(served: Door) -> None:
    names = served.own.query(
        "SELECT code, errorCodeToName(code) FROM (SELECT arrayJoin({codes:Array(UInt32)}) AS code)",
        parameters={"codes": list(CODES.values())},
    ).result_rows
    assert {name: code for code, name in names} == CODES


def test_a_refusal_before_the_body_is_read_closes_the_connection_cleanly(served: Door) -> None:
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


def test_migrations_apply_through_an_http_dsn(served: Door) -> None:
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


def _running(served: Door, marker: str) -> bool:
    found = served.own.query(
        "SELECT count() FROM system.processes WHERE query LIKE {m:String} "
        "AND query NOT LIKE '%system.processes%'",
        parameters={"m": f"%{marker}%"},
    ).result_rows[0][0]
    return bool(found)
