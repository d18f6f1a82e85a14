"""``segwatch serve``'s users: who gets in, what each may run, budgets, cancellation.

One door with four users over one store for the module: ``analyst`` reads
(``readonly``, the readers' default budget), ``writer`` writes, ``busy`` writes
with two query slots, ``hasty`` with a one-second time budget. Credentials travel each
way ClickHouse takes them; what reaches the host (files, network) is refused to
every user however it is spelled; a client that leaves has its query killed.
"""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from waiting import wait_until

from segwatch.clickhouse.sql_text import split_statements
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config.serve import ServeConfig, ServeUser
from segwatch.collector.serve import ClickHouseDoor
from segwatch.collector.serve.guard import check_statement, reaching_names
from segwatch.collector.serve.statement import read_statement
from segwatch.collector.serve.users import Accounts

PASSWORDS = {"analyst": "an-pass", "writer": "wr-pass", "busy": "bu-pass", "hasty": "ha-pass"}
USERS = (
    ServeUser(
        "analyst",
        password_env="T_SERVE_ANALYST",
        readonly=True,
        max_execution_time=60,
        max_memory_mib=4096,
    ),
    ServeUser("writer", password_env="T_SERVE_WRITER"),
    ServeUser("busy", password_env="T_SERVE_BUSY", max_concurrent_queries=2),
    ServeUser("hasty", password_env="T_SERVE_HASTY", max_execution_time=1),
)
SLOW = "SELECT sleepEachRow(0.1), '{marker}' FROM numbers(100) SETTINGS max_block_size = 1"


@dataclass
class Answer:
    status: int
    code: str | None
    body: bytes


@dataclass
class Served:
    door: ClickHouseDoor
    own: Client
    secret: Path  # a file on the host no user may read

    def client(self, user: str, **options: Any) -> Client:
        return clickhouse_connect.get_client(
            host="127.0.0.1",
            port=self.door.port,
            username=user,
            password=PASSWORDS[user],
            database="segwatch",
            **options,
        )

    def request(
        self,
        user: str | None,
        sql: str,
        method: str = "POST",
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if user is not None:
            sent.setdefault("Authorization", _basic(user, PASSWORDS[user]))
        query = {"database": "segwatch", **(params or {})}
        body = None
        if method in ("GET", "HEAD"):
            query["query"] = sql
        else:
            body = sql.encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.door.port, timeout=60)
        try:
            connection.request(method, "/?" + urlencode(query), body=body, headers=sent)
            response = connection.getresponse()
            code = response.headers["X-ClickHouse-Exception-Code"]
            return Answer(response.status, code, response.read())
        finally:
            connection.close()

    def running(self, marker: str) -> int:
        """How many queries with ``marker`` in their text run now."""
        return int(
            self.own.query(
                "SELECT count() FROM system.processes WHERE query LIKE {m:String} "
                "AND query NOT LIKE '%system.processes%'",
                parameters={"m": f"%{marker}%"},
            ).result_rows[0][0]
        )

    def kill(self, marker: str) -> None:
        self.own.command(
            "KILL QUERY WHERE query LIKE {m:String} AND query NOT LIKE '%system.processes%' SYNC",
            parameters={"m": f"%{marker}%"},
        )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("serve-users")
    location = parse_dsn(f"chdb://{directory / 'store'}")
    own = open_client(location)
    own.command("CREATE TABLE segwatch.facts (a UInt32) ENGINE = MergeTree ORDER BY a")
    own.command("INSERT INTO segwatch.facts SELECT number FROM numbers(10)")
    secret = directory / "host-secret.csv"
    secret.write_text("1,the host's secret\n")
    with pytest.MonkeyPatch.context() as patch:
        for user in USERS:
            patch.setenv(user.password_env, PASSWORDS[user.name])
        door = ClickHouseDoor(
            ServeConfig(endpoint="127.0.0.1:0", users=USERS), location.path, slot_wait=0.3
        )
    door.start()
    yield Served(door, own, secret)
    door.shutdown()
    own.close()


# -- who gets in


@pytest.mark.parametrize("password", [None, "wrong"])
def test_without_the_right_password_nobody_gets_in(served: Served, password: str | None) -> None:
    headers = {} if password is None else {"Authorization": _basic("analyst", password)}
    answer = served.request(None, "SELECT 1", headers=headers)
    assert (answer.status, answer.code) == (403, "516")
    assert b"(AUTHENTICATION_FAILED)" in answer.body
    with pytest.raises(DatabaseError) as refused:
        clickhouse_connect.get_client(
            host="127.0.0.1", port=served.door.port, username="analyst", password=password or ""
        )
    assert refused.value.code == 516


@pytest.mark.parametrize(
    "params, headers",
    [
        ({}, {"Authorization": _basic("analyst", "an-pass")}),
        ({}, {"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": "an-pass"}),
        ({"user": "analyst", "password": "an-pass"}, {}),
    ],
    ids=["basic", "x-clickhouse", "params"],
)
def test_each_way_of_giving_credentials_works(
    served: Served, params: dict[str, str], headers: dict[str, str]
) -> None:
    answer = served.request(None, "SELECT count() FROM facts", params=params, headers=headers)
    assert (answer.status, answer.body) == (200, b"10\n")


def test_credentials_given_two_ways_at_once_are_refused(served: Served) -> None:
    answer = served.request(
        "analyst", "SELECT 1", params={"user": "analyst", "password": "an-pass"}
    )
    assert (answer.status, answer.code) == (403, "516")


# -- what each may run


def test_clickhouse_connect_reads_as_the_reader_and_cannot_write(served: Served) -> None:
    reader = served.client("analyst")
    assert reader.query("SELECT sum(a) FROM facts").result_rows == [(45,)]
    with pytest.raises(DatabaseError) as refused:
        reader.insert("facts", [[100]], column_names=["a"])
    assert refused.value.code == 164


def test_the_writer_inserts(served: Served) -> None:
    table = f"w_{uuid.uuid4().hex[:8]}"
    writer = served.client("writer")
    writer.command(f"CREATE TABLE {table} (a UInt32) ENGINE = MergeTree ORDER BY a")
    assert writer.insert(table, [[1], [2]], column_names=["a"]).written_rows == 2
    assert served.own.query(f"SELECT count() FROM segwatch.{table}").result_rows == [(2,)]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO facts VALUES (99)",
        "CREATE TABLE reader_made (a UInt8) ENGINE = Memory",
        "ALTER TABLE facts DELETE WHERE a = 1",
    ],
)
def test_the_reader_cannot_write(served: Served, sql: str) -> None:
    answer = served.request("analyst", sql)
    assert (answer.status, answer.code) == (500, "164")
    # as a server names who logged in, not the engine's own session user
    assert b"analyst: Cannot execute query in readonly mode" in answer.body
    assert b"default" not in answer.body
    assert served.own.query("SELECT count() FROM segwatch.facts").result_rows == [(10,)]


@pytest.mark.parametrize(
    "params, sql",
    [
        ({"max_execution_time": "0"}, "SELECT 1"),
        ({"max_execution_time": "3600"}, "SELECT 1"),
        ({}, "SELECT 1 SETTINGS max_execution_time = 0"),
        ({}, "SELECT 1 SETTINGS max_memory_usage = 0"),
    ],
)
def test_the_reader_cannot_lift_its_budget(
    served: Served, params: dict[str, str], sql: str
) -> None:
    answer = served.request("analyst", sql, params=params)
    assert (answer.status, answer.code) == (500, "452")
    assert b"(SETTING_CONSTRAINT_VIOLATION)" in answer.body


def test_a_writer_with_a_budget_cannot_lift_it_in_sql_either(served: Served) -> None:
    for sql, params in [
        ("SELECT 1 SETTINGS max_execution_time = 0", {}),
        ("SET max_execution_time = 100", {"session_id": "busy-set"}),
    ]:
        answer = served.request("hasty", sql, params=params)
        assert (answer.status, answer.code) == (500, "452"), sql
    within = served.request(
        "hasty", "SELECT getSetting('max_execution_time') SETTINGS max_execution_time = 1"
    )
    assert (within.status, within.body) == (200, b"1\n")


def test_a_readers_setting_changes_are_refused_even_after_one_that_changes_nothing(
    served: Served,
) -> None:
    # 60 is the reader's own max_execution_time: setting it changes nothing, and the
    # engine lets that through; the next setting must still meet readonly=1.
    answer = served.request(
        "analyst",
        "SELECT a FROM facts",
        params={"max_execution_time": "60", "max_result_rows": "1"},
    )
    assert (answer.status, answer.code) == (500, "164")


def _reaching(served: Served) -> list[str]:
    path = str(served.secret)
    return [
        f"SELECT * FROM file('{path}', 'CSV')",
        f"SELECT * FROM `file`('{path}', 'CSV')",
        f"SELECT * FROM \"FILE\" ('{path}', 'CSV')",
        f"SELECT file('{path}')",
        f"SELECT content FROM filesystem('{served.secret.parent}')",
        f"SELECT * FROM icebergLocal('{served.secret.parent}')",
        "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
        f"SELECT 1 INTO OUTFILE '{served.secret.parent / 'written.csv'}' FORMAT CSV",
        f"INSERT INTO facts FROM INFILE '{path}' FORMAT CSV",
        f"INSERT INTO facts FROM INFILE '{path}'",
        "CREATE TABLE out_u (a String) ENGINE = URL('http://127.0.0.1:9/x', CSV)",
        "CREATE TABLE out_k (a String) ENGINE = Kafka SETTINGS kafka_broker_list = 'h:9092'",
        f"CREATE DATABASE out_f ENGINE = Filesystem('{served.secret.parent}')",
        "CREATE DICTIONARY out_d (a UInt64, b String) PRIMARY KEY a "
        "SOURCE(HTTP(URL 'http://127.0.0.1:9/x' FORMAT 'TSV')) LAYOUT(FLAT()) LIFETIME(0)",
        "SELECT a FROM facts SETTINGS additional_table_filters = "
        f"{{'facts': 'a IN (SELECT c1 FROM file(''{path}''))'}}",
        "SELECT a FROM facts SETTINGS additional_table_filters = "  # file, its l escaped
        f"{{'facts': 'a IN (SELECT c1 FROM fi\\x6ce(''{path}''))'}}",
    ]


@pytest.mark.parametrize("user", ["analyst", "writer"])
def test_nobody_reaches_the_hosts_files_or_network(served: Served, user: str) -> None:
    for sql in _reaching(served):
        answer = served.request(user, sql)
        assert (answer.status, answer.code) == (403, "497"), sql
        assert b"secret" not in answer.body
    assert not (served.secret.parent / "written.csv").exists()
    in_a_url_setting = f"{{'facts': 'a IN (SELECT 1 FROM file(\\'{served.secret}\\'))'}}"
    answer = served.request(
        "writer", "SELECT a FROM facts", params={"additional_table_filters": in_a_url_setting}
    )
    assert (answer.status, answer.code) == (403, "497")


def test_what_keeps_to_the_store_runs(served: Served) -> None:
    table = f"ok_{uuid.uuid4().hex[:8]}"
    created = served.request(
        "writer",
        f"CREATE TABLE {table} (a UInt32 CODEC(ZSTD(1)), s String, INDEX i s TYPE set(100) "
        "GRANULARITY 1) ENGINE = ReplacingMergeTree ORDER BY a",
    )
    assert created.status == 200, created.body
    answer = served.request(
        "analyst",
        f"SELECT log(1), format('{{}}-{{}}', 'a', 'b'), count() "
        f"FROM {table} WHERE s LIKE '%file(%'",
    )
    assert (answer.status, answer.body) == (200, b"0\ta-b\t0\n")


@pytest.mark.parametrize(
    "package", ["segwatch.clickhouse.migrations", "segwatch.clickhouse.detectors"]
)
def test_segwatchs_own_sql_passes_the_guard(served: Served, package: str) -> None:
    assert served.door.engine is not None
    reaching = reaching_names(served.door.engine.known_names())
    environ = {user.password_env: PASSWORDS[user.name] for user in USERS}
    writer = Accounts(USERS, environ).authenticate("writer", PASSWORDS["writer"])
    checked = 0
    for sql_file in resources.files(package).iterdir():
        if sql_file.name.endswith(".sql"):
            for sql in split_statements(sql_file.read_text()):
                check_statement(read_statement(sql.encode(), True), writer, "POST", reaching, {})
                checked += 1
    assert checked


def test_one_statement_per_request(served: Served) -> None:
    """A second statement after ';' is refused, as by ClickHouse's HTTP interface: it would
    slip past what the door checks of the first (a GET, a budget, a setting)."""
    steal = (
        "SELECT 1; SET additional_table_filters = {'facts': 'throwIf(1, (SELECT "
        f"groupConcat(line) FROM file(''{served.secret}'', LineAsString)))'}}; SELECT * FROM facts"
    )
    for sql in (
        steal,
        "SELECT 1; SET max_execution_time = 0",
        "SELECT 1; CREATE TABLE x1 (a UInt8) ENGINE = Memory",
        "INSERT INTO facts; DROP TABLE facts FORMAT TSV\n1",
    ):
        answer = served.request("writer", sql)
        assert (answer.status, answer.code) == (400, "62"), sql
        assert b"Multi-statements are not allowed" in answer.body
        assert b"secret" not in answer.body
    assert served.request("writer", "SELECT count() FROM facts;").body == b"10\n"
    assert served.own.query("EXISTS TABLE segwatch.x1").result_rows == [(0,)]


def test_no_setting_names_a_file_or_url_where_the_store_runs(served: Served) -> None:
    written = served.secret.parent / "schema.proto"
    template = f"SELECT 1 FORMAT Template SETTINGS format_template_resultset = '{served.secret}'"
    for sql, params in (
        (template, {}),
        (f"SET format_schema = '{served.secret}'", {}),
        ("SELECT a FROM facts FORMAT Protobuf", {"output_format_schema": str(written)}),
        ("SELECT 1", {"input_format_record_errors_file_path": str(written)}),
    ):
        answer = served.request("writer", sql, params=params)
        assert (answer.status, answer.code) == (403, "497"), sql
        assert b"secret" not in answer.body
    assert not written.exists()


def test_a_reader_ends_no_query(served: Served) -> None:
    answer = served.request("analyst", "KILL QUERY WHERE 1 ASYNC")
    assert (answer.status, answer.code) == (403, "497")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_get_or_head_never_writes(served: Served, method: str) -> None:
    for params in ({}, {"readonly": "0"}):
        answer = served.request("writer", "CREATE TABLE x2 (a UInt8) ENGINE = Memory",
                                method=method, params=params)  # fmt: skip
        assert (answer.status, answer.code) == (500, "164")
    assert served.own.query("EXISTS TABLE segwatch.x2").result_rows == [(0,)]


def test_a_post_without_a_length_is_refused(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.door.port), timeout=30) as connection:
        connection.sendall(b"POST /?query=SELECT%201 HTTP/1.1\r\nHost: door\r\n\r\n")
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 411")


def test_a_strangers_form_body_is_not_read(served: Served) -> None:
    """Credentials are checked before a multipart body is read (and decompressed)."""
    boundary = "b0undary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"param_x\"\r\n\r\n1\r\n"
            f"--{boundary}--\r\n").encode()  # fmt: skip
    connection = http.client.HTTPConnection("127.0.0.1", served.door.port, timeout=30)
    try:
        connection.request("POST", "/", body=form, headers={
            "Authorization": _basic("writer", "wrong"),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        })  # fmt: skip
        response = connection.getresponse()
        assert (response.status, response.headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    finally:
        connection.close()


def test_a_get_only_reads(served: Served) -> None:
    answer = served.request("writer", "INSERT INTO facts VALUES (7)", method="GET")
    assert (answer.status, answer.code) == (500, "164")
    assert b"method GET implies readonly" in answer.body
    assert served.request("writer", "SELECT count() FROM facts", method="GET").body == b"10\n"


# -- budgets and cancellation


def test_a_query_past_its_time_budget_is_stopped(served: Served) -> None:
    answer = served.request("hasty", SLOW.format(marker="timeout") + " FORMAT Null")
    assert (answer.status, answer.code) == (408, "159")
    assert b"(TIMEOUT_EXCEEDED)" in answer.body


def test_a_users_queries_beyond_its_slots_are_refused(served: Served) -> None:
    marker = uuid.uuid4().hex
    sql = SLOW.format(marker=marker) + " FORMAT Null"
    slow = [threading.Thread(target=served.request, args=("busy", sql)) for _ in range(2)]
    for thread in slow:
        thread.start()
    try:
        wait_until(lambda: served.running(marker) == 2, timeout=30)
        extra = served.request("busy", "SELECT 1")
        assert (extra.status, extra.code) == (500, "202")
        assert b"(TOO_MANY_SIMULTANEOUS_QUERIES)" in extra.body
        assert served.request("writer", "SELECT 1").body == b"1\n"  # another user's slots
    finally:
        served.kill(marker)
        for thread in slow:
            thread.join(30)


@pytest.mark.parametrize("comment", ["", "&log_comment=the-clients-own"])
def test_a_client_that_leaves_has_its_query_killed(served: Served, comment: str) -> None:
    """Also when the client tags its query with a log_comment of its own (the door finds
    a query by it to kill it)."""
    marker = uuid.uuid4().hex
    body = (SLOW.format(marker=marker) + " FORMAT Null").encode()  # ten seconds
    with socket.create_connection(("127.0.0.1", served.door.port)) as connection:
        connection.sendall(
            f"POST /?database=segwatch{comment} HTTP/1.1\r\nHost: door\r\n".encode()
            + f"Authorization: {_basic('writer', 'wr-pass')}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_until(lambda: served.running(marker), timeout=30)
    wait_until(lambda: not served.running(marker), timeout=5)


def test_a_query_runs_on_while_the_process_holds_over_a_thousand_descriptors(
    served: Served,
) -> None:
    """The door watches each connection for its client leaving; a process that holds more
    descriptors than select() takes (1024: a long-running collector does) must not read
    that as every client gone and kill every query."""
    held = [socket.socket() for _ in range(1100)]
    try:
        answer = served.request(
            "writer",
            "SELECT sum(s) FROM (SELECT sleepEachRow(0.1) AS s FROM numbers(5)) "
            "SETTINGS max_block_size = 1",
        )
    finally:
        for sock in held:
            sock.close()
    assert (answer.status, answer.code) == (200, None)
