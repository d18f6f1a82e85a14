"""The read-only SQL path (``segwatch sql``, ``POST /api/v1/sql``) on the real embedded engine.

Only statements that read are run; everything else is refused by name before it
reaches the engine, and keywords inside strings and comments are text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from segwatch.clickhouse.queries import read_only_query


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("SYSTEM FLUSH LOGS", "SYSTEM"),
        ("KILL QUERY WHERE 1", "KILL"),  # readonly=1 lets this one through
        ("kill query where 1 sync", "KILL"),
        ("USE system", "USE"),  # so does this: it switches a shared client's database
        ("INSERT INTO ml_anomalies (detector) VALUES ('x')", "INSERT"),
        ("OPTIMIZE TABLE ml_model_calls FINAL", "OPTIMIZE"),
        ("SET readonly = 0", "SET"),
        ("/* a comment */ -- and another\nSYSTEM DROP DNS CACHE", "SYSTEM"),
        ("(KILL QUERY WHERE 1)", "KILL"),
        # ClickHouse nests comments: all of ``/* /* */ SELECT 1 */`` is one comment.
        ("/* /* */ SELECT 1 */ KILL QUERY WHERE 1", "KILL"),
    ],
)
def test_statements_that_do_not_read_are_refused_by_kind(
    client: Any, query: str, kind: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{kind} statements are not allowed: .*SELECT"):
        read_only_query(client, query)
    assert read_only_query(client, "SELECT currentDatabase()").rows == [["segwatch"]]


def test_with_must_lead_to_a_select(client: Any) -> None:
    with pytest.raises(ValueError, match="WITH must lead to a SELECT"):
        read_only_query(client, "WITH 1 AS a KILL QUERY WHERE 1")


def test_a_format_clause_is_refused_with_its_own_words(client: Any) -> None:
    """Not the engine's syntax error about the ``FORMAT Native`` the client appends."""
    for query in ("SELECT 1 FORMAT JSON", "select 1 format JSON;",
                  "SELECT 1 FORMAT JSON SETTINGS max_threads = 1"):  # fmt: skip
        with pytest.raises(ValueError, match="remove 'FORMAT JSON'") as refused:
            read_only_query(client, query)
        assert "Native" not in str(refused.value)
    # A FORMAT with no name: not the engine's error about the readonly setting appended.
    for query in ("SELECT 1 FORMAT", "SELECT count() FORMAT;", "SELECT 'a' format"):
        with pytest.raises(ValueError, match="remove the 'FORMAT' that ends the query"):
            read_only_query(client, query)
    # A column named format still reads.
    assert read_only_query(client, "SELECT x, format FROM (SELECT 1 AS x, 2 AS format)").rows


def test_into_outfile_is_refused(client: Any, tmp_path: Path) -> None:
    target = tmp_path / "out.tsv"
    with pytest.raises(ValueError, match="INTO OUTFILE is not allowed"):
        read_only_query(client, f"SELECT 1 INTO OUTFILE '{target}'")
    assert not target.exists()


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        ("select 'FORMAT' AS x", [["FORMAT"]]),
        ("SELECT 'KILL QUERY; FORMAT JSON' AS x", [["KILL QUERY; FORMAT JSON"]]),
        ("SELECT 1 AS format", [[1]]),
        ("SELECT format FROM (SELECT 2 AS format)", [[2]]),
        ("SELECT format('{} {}', 'a', 'b') AS x", [["a b"]]),
        ("SELECT 3 -- FORMAT JSON", [[3]]),
        ("SELECT 4 /* FORMAT JSON; KILL QUERY WHERE 1 */", [[4]]),
        ("/* KILL */ # SYSTEM\nSELECT 5 // FORMAT JSON", [[5]]),
        ("SELECT $$FORMAT JSON$$ AS x", [["FORMAT JSON"]]),
        ("SELECT 'it''s; FORMAT JSON' AS x", [["it's; FORMAT JSON"]]),
        ("WITH 6 AS a SELECT a", [[6]]),
        ("(SELECT 7);", [[7]]),
        ("EXISTS TABLE ml_model_calls", [[1]]),
    ],
)
def test_reads_run_whatever_their_strings_and_comments_say(
    client: Any, query: str, rows: list[list[Any]]
) -> None:
    assert read_only_query(client, query).rows == rows


def test_show_describe_and_explain_run(client: Any) -> None:
    assert ["ml_model_calls"] in read_only_query(client, "SHOW TABLES").rows
    for describe in ("DESCRIBE TABLE ml_anomalies", "DESC ml_anomalies"):
        assert ["detector"] in [row[:1] for row in read_only_query(client, describe).rows]
    assert read_only_query(client, "EXPLAIN SELECT 1").columns == ["explain"]


def test_blank_queries_and_several_statements_are_refused(client: Any) -> None:
    with pytest.raises(ValueError, match="no SQL statement"):
        read_only_query(client, "-- nothing here")
    with pytest.raises(ValueError, match="one SQL statement at a time"):
        read_only_query(client, "SELECT 1; SELECT 2")
