"""Numbered migrations on the real embedded ClickHouse."""

from __future__ import annotations

import threading

import pytest
from waiting import wait_until

from segwatch.clickhouse.lease import LEASE_TABLE, Lease, LeaseHeldError, claim_once
from segwatch.clickhouse.migrate import (
    MIGRATION_LEASE,
    Migration,
    MigrationError,
    MigrationsPendingError,
    apply_migrations,
    load_migrations,
    pending_migrations,
    require_migrated,
)
from segwatch.clickhouse.sql_text import split_statements
from segwatch.clickhouse.store import StoreError, open_client, parse_dsn


@pytest.fixture
def bare_client(store_dsn: str):  # type: ignore[no-untyped-def]
    opened = open_client(parse_dsn(store_dsn))
    yield opened
    opened.close()


def test_fresh_store_gets_every_migration_once(bare_client) -> None:
    shipped = load_migrations()
    assert [m.version for m in shipped] == list(range(1, len(shipped) + 1))
    assert apply_migrations(bare_client) == [m.name for m in shipped]
    assert apply_migrations(bare_client) == []  # re-running applies nothing new
    rows = bare_client.query("SELECT version FROM segwatch_migrations ORDER BY version")
    assert [r[0] for r in rows.result_rows] == [m.version for m in shipped]
    tables = {r[0] for r in bare_client.query("SHOW TABLES").result_rows}
    expected = {"ml_segment_aggregates", "ml_model_calls", "ml_anomalies", "ml_labels"}
    assert expected | {"ml_labeled_calls"} <= tables


def test_every_column_has_a_comment(bare_client) -> None:
    apply_migrations(bare_client)
    rows = bare_client.query(
        "SELECT table, name FROM system.columns WHERE database = currentDatabase() "
        "AND comment = '' AND table NOT IN (SELECT name FROM system.tables "
        "WHERE database = currentDatabase() AND engine IN ('View', 'MaterializedView'))"
    ).result_rows
    assert rows == []  # a materialized view's columns are its target table's
    views = bare_client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND engine = 'View' AND comment = ''"
    ).result_rows
    assert views == []  # a view's columns cannot carry comments; the view itself does


def test_new_migration_is_applied_after_the_shipped_ones(bare_client) -> None:
    shipped = load_migrations()
    apply_migrations(bare_client, shipped)
    extra = Migration(
        len(shipped) + 1,
        "9999_extra.sql",
        "CREATE TABLE extra (x UInt8 COMMENT 'x') ENGINE = MergeTree ORDER BY x;\n"
        "-- a comment; with a semicolon\n"
        "INSERT INTO extra VALUES (1);",
    )
    assert apply_migrations(bare_client, [*shipped, extra]) == ["9999_extra.sql"]
    assert bare_client.query("SELECT count() FROM extra").result_rows == [(1,)]


def test_an_edited_migration_is_refused(bare_client) -> None:
    shipped = load_migrations()
    apply_migrations(bare_client, shipped)
    first = shipped[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="never be edited"):
        apply_migrations(bare_client, [edited, *shipped[1:]])


def test_numbering_gaps_and_bad_names_are_refused(tmp_path, monkeypatch) -> None:
    package = tmp_path / "fake_migrations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "0001_a.sql").write_text("SELECT 1;")
    (package / "0003_c.sql").write_text("SELECT 1;")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MigrationError, match="without gaps"):
        load_migrations("fake_migrations")
    (package / "0003_c.sql").unlink()
    (package / "2_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations("fake_migrations")


def test_statements_split_outside_quotes_only() -> None:
    from segwatch.clickhouse.sql_text import split_statements

    sql = (
        "-- a comment; with a semicolon\n"
        "CREATE TABLE t (x UInt8 COMMENT 'a -- not a comment; not a split') ENGINE = Memory;\n"
        "SELECT 'it''s', \"we;ird\" -- trailing comment\n"
        "FROM t;"
    )
    assert split_statements(sql) == [
        "CREATE TABLE t (x UInt8 COMMENT 'a -- not a comment; not a split') ENGINE = Memory",
        "SELECT 'it''s', \"we;ird\" \nFROM t",
    ]


def test_a_semicolon_in_a_block_comment_or_a_heredoc_is_not_a_split(bare_client) -> None:
    """On the real engine: the statements the shared lexer splits out are what ClickHouse reads."""
    sql = (
        "CREATE TABLE t /* one statement; not two */ (x String) ENGINE = Memory;\n"
        "INSERT INTO t SELECT $$a; b$$;\n"
        "/* nothing after this; */\n"
    )
    assert apply_migrations(bare_client, [Migration(1, "0001_t.sql", sql)]) == ["0001_t.sql"]
    assert bare_client.query("SELECT x FROM t").result_rows == [("a; b",)]


def test_the_aggregates_keep_their_rows_when_reordered_by_time(bare_client) -> None:
    shipped = load_migrations()
    reorder = next(m for m in shipped if m.name == "0011_aggregates_by_time.sql")
    apply_migrations(bare_client, shipped[: reorder.version - 1])
    bare_client.command(
        "INSERT INTO ml_segment_aggregates (model_name, bucket_start, segment_dim, segment_value, "
        "quantity, count, sampled, histogram) SELECT 'm', toDateTime('2026-11-26 10:00:00', 'UTC') "
        "+ 60 * (number % 90), '__all__', '__all__', 'output.score', 1, 1, map(16400, 1.) "
        "FROM numbers(1000)"
    )
    assert apply_migrations(bare_client, shipped) == [
        m.name for m in shipped[reorder.version - 1 :]
    ]
    (key,) = bare_client.query(
        "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() "
        "AND name = 'ml_segment_aggregates'"
    ).result_rows[0]
    assert key.startswith("model_name, model_stage, model_version, toStartOfFiveMinutes(")
    totals = bare_client.query(
        "SELECT sum(count), sum(sampled), sumMap(histogram), uniqExact(bucket_start) "
        "FROM ml_segment_aggregates"
    ).result_rows
    assert totals == [(1000.0, 1000, {16400: 1000.0}, 90)]
    tables = {r[0] for r in bare_client.query("SHOW TABLES").result_rows}
    assert "ml_segment_aggregates_by_time" not in tables


def test_pending_migrations_and_require_migrated_name_what_is_missing(bare_client) -> None:
    shipped = load_migrations()
    with pytest.raises(
        MigrationsPendingError, match=r"0001_segment_aggregates\.sql.*segwatch migrate"
    ):
        require_migrated(bare_client)
    assert "segwatch_migrations" not in _tables(bare_client)  # asking created nothing
    apply_migrations(bare_client, shipped[:5])
    assert pending_migrations(bare_client) == shipped[5:]
    lacks = rf"lacks {len(shipped) - 5} migration\(s\).*0006_deduplication\.sql"
    with pytest.raises(StoreError, match=lacks):
        require_migrated(bare_client)
    apply_migrations(bare_client)
    assert pending_migrations(bare_client) == []
    require_migrated(bare_client)
    edited = Migration(shipped[0].version, shipped[0].name, shipped[0].sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="never be edited"):
        pending_migrations(bare_client, [edited, *shipped[1:]])


def test_a_runner_waits_for_the_lease_another_runner_holds(bare_client, store_dsn) -> None:
    """A shared store (a server): the other runner is another process."""
    other = open_client(parse_dsn(store_dsn))
    try:
        held = Lease(other, MIGRATION_LEASE, "the other runner")
        held.acquire()
        with pytest.raises(LeaseHeldError, match="held by the other runner; it expires at"):
            apply_migrations(bare_client, exclusive=False, wait=0)
        assert pending_migrations(bare_client) == load_migrations()  # nothing applied
        held.release()
        assert len(apply_migrations(bare_client, exclusive=False, wait=0)) == len(load_migrations())
    finally:
        other.close()


def test_an_exclusive_store_is_migrated_without_the_lease(bare_client, store_dsn) -> None:
    """An embedded store, locked by this process: a lease left held by a run that crashed
    (here: taken and never released) does not hold up the next start."""
    crashed = open_client(parse_dsn(store_dsn))
    try:
        Lease(crashed, MIGRATION_LEASE, "a runner that crashed").acquire()
        assert len(apply_migrations(bare_client, wait=0)) == len(load_migrations())
        state = Lease(bare_client, MIGRATION_LEASE).state()
        assert state is not None and state.holder == "a runner that crashed"  # untouched
    finally:
        crashed.close()


def test_racing_runners_apply_each_migration_once(store_dsn) -> None:
    runners = [open_client(parse_dsn(store_dsn)) for _ in range(3)]
    results: list[list[str] | BaseException] = []

    def run(client) -> None:  # type: ignore[no-untyped-def]
        try:
            results.append(apply_migrations(client, exclusive=False, wait=120))
        except BaseException as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=run, args=(client,)) for client in runners]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        names = [m.name for m in load_migrations()]
        assert sorted(results, key=len) == [[], [], names]  # one ran them all, two found none
        versions = runners[0].query("SELECT version FROM segwatch_migrations").result_rows
        assert sorted(v for (v,) in versions) == list(range(1, len(names) + 1))
    finally:
        for client in runners:
            client.close()


def test_the_lease_is_renewed_while_a_long_statement_runs(bare_client, store_dsn) -> None:
    """A statement outlasting the lease (a copy of a big table) keeps it: a rival runner
    polling all along never finds it lapsed, let alone takes it."""
    slow = Migration(1, "0001_slow.sql", (
        "CREATE TABLE slow (x UInt64 COMMENT 'x') ENGINE = MergeTree ORDER BY x;\n"
        "INSERT INTO slow SELECT number FROM numbers(6) WHERE sleepEachRow(0.5) = 0 "
        "SETTINGS max_block_size = 1;"
    ))  # fmt: skip  # 3 s of inserting, under a lease of 2 s
    rival_client = open_client(parse_dsn(store_dsn))
    rival = Lease(rival_client, MIGRATION_LEASE, "a rival runner")
    done, taken = threading.Event(), []

    def poll() -> None:
        while not done.wait(0.05):
            state = rival.state()
            if state is not None and state.lapsed and not state.released:
                taken.append(rival.try_acquire())

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        applied = apply_migrations(bare_client, [slow], exclusive=False, holder="the runner",
                                   lease_seconds=2.0)  # fmt: skip
    finally:
        done.set()
        poller.join(60)
        rival_client.close()
    assert taken == []
    assert applied == ["0001_slow.sql"]
    assert bare_client.query("SELECT count() FROM slow").result_rows == [(6,)]
    (generations,) = bare_client.query(
        f"SELECT count() FROM {LEASE_TABLE} WHERE holder = 'the runner' AND lease_ms > 0"
    ).result_rows[0]
    assert generations >= 3  # taken, renewed while the insert ran, confirmed before recording


# A statement that takes the migrations lease over as another runner would, had this
# runner's lapsed: it claims the next generation first (earlier on the store's clock).
_TAKE_OVER = (
    f"INSERT INTO {LEASE_TABLE} (key, lease, generation, holder, claimed_at, lease_ms) "
    "SELECT concat('lease:migrations:', toString(max(generation) + 1)), 'migrations', "
    "max(generation) + 1, 'a runner that took over', now64(3) - INTERVAL 1 SECOND, 600000 "
    f"FROM {LEASE_TABLE} WHERE lease = 'migrations'"
)


@pytest.mark.parametrize(
    ("statements", "stopped_before"),
    [
        (["CREATE TABLE a (x UInt8 COMMENT 'x') ENGINE = MergeTree ORDER BY x",
          "CREATE TABLE b (y UInt8 COMMENT 'y') ENGINE = MergeTree ORDER BY y",
          _TAKE_OVER, "EXCHANGE TABLES a AND b"], "its EXCHANGE"),
        (["CREATE TABLE a (x UInt8 COMMENT 'x') ENGINE = MergeTree ORDER BY x", _TAKE_OVER],
         "being recorded as applied"),
    ],
)  # fmt: skip
def test_a_runner_that_lost_the_lease_stops_before_publishing_or_recording(
    bare_client, statements: list[str], stopped_before: str
) -> None:
    migration = Migration(1, "0001_taken_over.sql", ";\n".join(statements))
    with pytest.raises(MigrationError, match=f"0001_taken_over.sql stopped before "
                       f"{stopped_before}: this runner lost the migrations lease"):  # fmt: skip
        apply_migrations(bare_client, [migration], exclusive=False, quiet=0)
    columns = bare_client.query("SELECT name FROM system.columns WHERE database = "
                                "currentDatabase() AND table = 'a'").result_rows  # fmt: skip
    assert columns == [("x",)]  # not exchanged
    assert pending_migrations(bare_client, [migration]) == [migration]  # not recorded
    state = Lease(bare_client, MIGRATION_LEASE).state()
    assert state is not None and state.holder == "a runner that took over"  # left to it


@pytest.mark.parametrize("exclusive", [True, False])
def test_a_store_migrated_before_the_lease_table_gets_it_from_a_migration(
    bare_client, exclusive: bool
) -> None:
    """A store an earlier version migrated has every migration but the lease table's: the
    migration makes it (collectors, whose users may not create tables, need it to claim
    windows; they wait for this migration as for any other)."""
    shipped = load_migrations()
    leases = next(m for m in shipped if m.name == "0012_leases.sql")
    apply_migrations(bare_client, shipped[: leases.version - 1])  # embedded: no lease taken
    assert LEASE_TABLE not in _tables(bare_client)
    later = [m.name for m in shipped[leases.version - 1 :]]
    with pytest.raises(
        MigrationsPendingError, match=rf"lacks {len(later)} migration\(s\).*0012_leases"
    ):
        require_migrated(bare_client)
    assert apply_migrations(bare_client, exclusive=exclusive) == later
    assert LEASE_TABLE in _tables(bare_client)
    require_migrated(bare_client)
    assert claim_once(bare_client, "detector:psi_drift:2026-12-06T06:00:00+00:00", "me")


def _store_aggregates(client, rows: int, minute: int = 0) -> None:  # type: ignore[no-untyped-def]
    client.command(
        "INSERT INTO ml_segment_aggregates (model_name, bucket_start, segment_dim, segment_value, "
        "quantity, count, sampled, histogram) SELECT 'm', toDateTime('2026-11-26 10:00:00', 'UTC') "
        f"+ 60 * ({minute} + number % 90), '__all__', '__all__', 'output.score', 1, 1, "
        f"map(16400, 1.) FROM numbers({rows})"
    )


def _before_the_rebuild(client) -> tuple[list[Migration], Migration]:  # type: ignore[no-untyped-def]
    shipped = load_migrations()
    rebuild = next(m for m in shipped if m.name == "0011_aggregates_by_time.sql")
    apply_migrations(client, shipped[: rebuild.version - 1])
    return shipped, rebuild


def _assert_not_rebuilt(client, total: float) -> None:  # type: ignore[no-untyped-def]
    """The rebuild neither happened nor left its copy behind, and every row is there."""
    assert client.query("SELECT sum(count) FROM ml_segment_aggregates").result_rows == [(total,)]
    assert "ml_segment_aggregates_by_time" not in _tables(client)
    (key,) = client.query(
        "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() "
        "AND name = 'ml_segment_aggregates'"
    ).result_rows[0]
    assert "toStartOfFiveMinutes" not in key
    assert "0011_aggregates_by_time.sql" in {m.name for m in pending_migrations(client)}


def test_a_rebuild_is_refused_while_a_writer_thread_writes_the_table(
    bare_client, store_dsn
) -> None:
    """A shared store (a server): an older collector still writes ml_segment_aggregates."""
    shipped, _ = _before_the_rebuild(bare_client)
    _store_aggregates(bare_client, 1000)
    stop, written = threading.Event(), []
    writer_client = open_client(parse_dsn(store_dsn))

    def write() -> None:
        while not stop.is_set():
            _store_aggregates(writer_client, 10, minute=len(written))
            written.append(10)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: written)
        with pytest.raises(MigrationError, match="collector is still writing ml_segment_agg"):
            apply_migrations(bare_client, shipped, exclusive=False, quiet=60)
    finally:
        stop.set()
        writer.join(60)
        writer_client.close()
    _assert_not_rebuilt(bare_client, 1000.0 + sum(written))


def test_a_rebuild_aborts_before_the_exchange_if_the_table_was_written_during_the_copy(
    bare_client,
) -> None:
    """The 0011 rebuild with one more statement between its copy and its EXCHANGE: an
    insert into the table being rebuilt, where a collector's write would land."""
    shipped, rebuild = _before_the_rebuild(bare_client)
    _store_aggregates(bare_client, 1000)
    statements = split_statements(rebuild.sql)
    exchange = next(i for i, s in enumerate(statements) if s.startswith("EXCHANGE TABLES"))
    statements.insert(exchange, _insert_sql(5))
    written_during = Migration(rebuild.version, rebuild.name, ";\n".join(statements))
    with pytest.raises(MigrationError, match=r"written while 0011_aggregates_by_time\.sql copied"):
        apply_migrations(bare_client, [*shipped[: rebuild.version - 1], written_during],
                         exclusive=False, quiet=0)  # fmt: skip
    _assert_not_rebuilt(bare_client, 1005.0)


def test_a_rebuild_on_a_shared_store_runs_once_the_table_is_quiet(bare_client) -> None:
    shipped, rebuild = _before_the_rebuild(bare_client)
    _store_aggregates(bare_client, 1000)
    quiet_for = (
        "SELECT dateDiff('second', max(modification_time), now()) FROM system.parts "
        "WHERE active AND database = currentDatabase() AND table = 'ml_segment_aggregates'"
    )
    wait_until(lambda: bare_client.query(quiet_for).result_rows[0][0] >= 1, timeout=30)
    applied = apply_migrations(bare_client, shipped, exclusive=False, quiet=1)
    assert applied == [m.name for m in shipped[rebuild.version - 1 :]]
    assert bare_client.query("SELECT sum(count) FROM ml_segment_aggregates").result_rows == [
        (1000.0,)
    ]
    assert "ml_segment_aggregates_by_time" not in _tables(bare_client)


def _insert_sql(rows: int) -> str:
    return (
        "INSERT INTO ml_segment_aggregates (model_name, bucket_start, segment_dim, "
        "segment_value, quantity, count, sampled, histogram) SELECT 'm', "
        "toDateTime('2026-11-26 12:00:00', 'UTC'), '__all__', '__all__', 'output.score', 1, 1, "
        f"map(16400, 1.) FROM numbers({rows})"
    )


def _tables(client) -> set[str]:  # type: ignore[no-untyped-def]
    return {r[0] for r in client.query("SHOW TABLES").result_rows}
