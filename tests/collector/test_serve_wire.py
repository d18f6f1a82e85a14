"""``segwatch serve``'s ClickHouse HTTP door: the bytes on the wire.

Raw inserts in several formats (clickhouse-connect's ``raw_insert`` and curl),
chunked and gzip request bodies; answers in each output format byte for byte
against the engine itself, the ``X-ClickHouse-*`` headers, ``/ping``, and
compressed answers. curl and raw ``http.client`` where the bytes matter.

One door and one store for the module (chdb holds one store directory per
process); every test writes its own tables.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import chdb
import pytest
from serve_door import Door, open_door


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with open_door(tmp_path_factory.mktemp("serve")) as door:
        yield door


# -- raw inserts and request bodies

_ROWS = [(1, "a,b"), (2, "c\td"), (3, 'q"uote')]
_FORMATTED = {
    "TabSeparated": b'1\ta,b\n2\tc\\td\n3\tq"uote\n',
    "JSONEachRow": b'{"a":1,"s":"a,b"}\n{"a":2,"s":"c\\td"}\n{"a":3,"s":"q\\"uote"}\n',
    "CSV": b'1,"a,b"\n2,"c\td"\n3,"q""uote"\n',
    "RowBinary": b"".join(a.to_bytes(4, "little") + bytes([len(s)]) + s.encode() for a, s in _ROWS),
}


@pytest.mark.parametrize("fmt", list(_FORMATTED))
def test_raw_inserts_in_each_format_from_clickhouse_connect_and_curl(
    served: Door, fmt: str
) -> None:
    table = served.table()
    served.client().raw_insert(table, ["a", "s"], _FORMATTED[fmt], fmt=fmt)
    query = urlencode({"query": f"INSERT INTO segwatch.{table} FORMAT {fmt}"})
    sent = served.curl("--data-binary", "@-", f"{served.door.url}/?{query}", data=_FORMATTED[fmt])
    assert sent.returncode == 0 and sent.stdout == b"", sent.stderr
    assert served.rows(table) == sorted(_ROWS + _ROWS)


def test_a_chunked_body_carries_the_statement_and_its_data(served: Door) -> None:
    table = served.table()

    def pieces() -> Iterator[bytes]:
        yield f"INSERT INTO segwatch.{table} FO".encode()
        yield b"RMAT TabSepa"
        yield b"rated\n1\tx\n2\t"
        yield b"y\n"

    connection = http.client.HTTPConnection("127.0.0.1", served.door.port, timeout=60)
    try:
        connection.request("POST", "/", body=pieces(), encode_chunked=True)
        answer = connection.getresponse()
        assert (answer.status, answer.read()) == (200, b"")
    finally:
        connection.close()
    assert served.rows(table) == [(1, "x"), (2, "y")]


def test_curl_sends_a_gzip_body(served: Door, tmp_path: Path) -> None:
    table = served.table()
    (tmp_path / "rows.csv.gz").write_bytes(gzip.compress(b"5,five\n6,six\n"))
    query = urlencode({"query": f"INSERT INTO segwatch.{table} FORMAT CSV"})
    sent = served.curl(
        "--data-binary",
        f"@{tmp_path / 'rows.csv.gz'}",
        "-H",
        "Content-Encoding: gzip",
        f"{served.door.url}/?{query}",
    )
    assert sent.returncode == 0 and sent.stdout == b"", sent.stderr
    assert served.rows(table) == [(5, "five"), (6, "six")]


# -- answers


@pytest.fixture(scope="module")
def sample(served: Door) -> Iterator[tuple[str, Any]]:
    """A table of several types, and a second connection to the engine itself."""
    table = served.table(
        "a UInt32, s String, t DateTime('UTC'), f Float64, n Nullable(Int8), l Array(String)",
    )
    served.own.command(
        f"INSERT INTO segwatch.{table} SELECT number, concat('é\"\\t', toString(number)), "
        "toDateTime('2024-01-01 00:00:00', 'UTC') + number * 3600, number / 3, "
        "if(number % 2, NULL, number), [toString(number), 'x'] FROM numbers(50)"
    )
    engine = chdb.connect(served.path)  # type: ignore[no-untyped-call]
    yield f"SELECT * FROM segwatch.{table} ORDER BY a", engine
    engine.close()


@pytest.mark.parametrize(
    "fmt",
    [
        "TabSeparated",
        "JSONEachRow",
        "CSVWithNames",
        "Native",
        "RowBinaryWithNamesAndTypes",
        "Parquet",
        "JSON",
    ],
)
def test_each_output_format_is_the_engines_own_bytes(
    served: Door, sample: tuple[str, Any], fmt: str
) -> None:
    sql, engine = sample
    direct = engine.query(sql, fmt).bytes()
    by_default_format = served.request("POST", {"default_format": fmt}, sql.encode())
    by_clause = served.request("POST", {"query": f"{sql} FORMAT {fmt}"})
    for answer in (by_default_format, by_clause):
        assert answer.status == 200 and answer.headers["X-ClickHouse-Format"] == fmt
        if fmt == "JSON":  # the statistics (elapsed time) differ from run to run
            served_json, direct_json = json.loads(answer.body), json.loads(direct)
            served_json.pop("statistics"), direct_json.pop("statistics")
            assert served_json == direct_json
        else:
            assert answer.body == direct


def test_answers_carry_clickhouses_headers(served: Door) -> None:
    query_id = f"q-{uuid.uuid4().hex}"
    answer = served.request(
        "POST", {"query": "SELECT number FROM numbers(5)", "query_id": query_id}
    )
    assert answer.headers["X-ClickHouse-Query-Id"] == query_id
    assert answer.headers["X-ClickHouse-Format"] == "TabSeparated"
    summary = json.loads(answer.headers["X-ClickHouse-Summary"])
    assert summary["read_rows"] == "5" and summary["result_bytes"] == str(len(answer.body))
    timezone = served.own.query("SELECT timezone()").result_rows[0][0]
    assert answer.headers["X-ClickHouse-Timezone"] == timezone
    assert answer.headers["X-ClickHouse-Server-Display-Name"] == socket.gethostname()
    echoed = served.client().query("SELECT 1", settings={"query_id": query_id + "-cc"})
    assert echoed.query_id == query_id + "-cc"


@pytest.mark.parametrize("path", ["/ping", "/replicas_status"])
def test_health_paths_answer_ok(served: Door, path: str) -> None:
    answered = served.curl("-i", f"{served.door.url}{path}")
    assert answered.stdout.startswith(b"HTTP/1.1 200")
    assert answered.stdout.endswith(b"\r\n\r\nOk.\n")


def test_answers_are_compressed_when_asked_for(served: Door) -> None:
    sql = b"SELECT number, toString(number) FROM numbers(1000)"
    plain = served.request("POST", body=sql, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in plain.headers  # not without enable_http_compression
    packed = served.request(
        "POST", {"enable_http_compression": "1"}, sql, {"Accept-Encoding": "gzip"}
    )
    assert packed.headers["Content-Encoding"] == "gzip"
    assert len(packed.body) < len(plain.body) and gzip.decompress(packed.body) == plain.body
