"""Numbered migrations on the real embedded ClickHouse."""

from __future__ import annotations

import pytest

from segwatch.clickhouse.migrate import (
    Migration,
    MigrationError,
    apply_migrations,
    load_migrations,
)
from segwatch.clickhouse.store import open_client, parse_dsn


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
        "WHERE database = currentDatabase() AND engine = 'View')"
    ).result_rows
    assert rows == []
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
