"""The one SQL lexer (:mod:`segwatch.clickhouse.sql_text`) and the statements split on it."""

from __future__ import annotations

from importlib import resources

import pytest

from segwatch.clickhouse.read_only import check_read_only
from segwatch.clickhouse.sql_text import Token, split_statements, tokens


def _old_split_statements(sql: str) -> list[str]:
    """The splitter ``sqlfile.py`` had before the lexer was shared, frozen here as it was.

    It knew quotes and ``--`` comments only: the shipped files must split the
    same with the new one, and the cases below show where it was wrong.
    """
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(sql):
        char = sql[i]
        if quote is not None:
            current.append(char)
            if char == "\\" and i + 1 < len(sql):
                current.append(sql[i + 1])
                i += 1
            elif char == quote:
                if sql[i + 1 : i + 2] == quote:  # a doubled quote is an escaped one
                    current.append(quote)
                    i += 1
                else:
                    quote = None
        elif char in ("'", '"', "`"):
            quote = char
            current.append(char)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end == -1 else end
            continue
        elif char == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def _shipped_sql_files() -> list[tuple[str, str]]:
    found = []
    for package in ("segwatch.clickhouse.migrations", "segwatch.clickhouse.detectors"):
        for entry in sorted(resources.files(package).iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".sql"):
                found.append((f"{package.rpartition('.')[2]}/{entry.name}", entry.read_text()))
    return found


SHIPPED = _shipped_sql_files()


def test_every_shipped_sql_file_is_found() -> None:
    names = {name for name, _ in SHIPPED}
    assert "migrations/0001_segment_aggregates.sql" in names
    assert "detectors/psi_drift.sql" in names
    assert len(names) >= 20


@pytest.mark.parametrize(("name", "sql"), SHIPPED, ids=[name for name, _ in SHIPPED])
def test_shipped_files_split_as_the_old_splitter_split_them(name: str, sql: str) -> None:
    assert split_statements(sql) == _old_split_statements(sql)


@pytest.mark.parametrize(
    ("sql", "statements"),
    [
        # A ';' in a block comment is text (the old splitter cut the comment in two).
        ("CREATE TABLE t /* a; b */ (x UInt8) ENGINE = Memory;\nSELECT 1",
         ["CREATE TABLE t /* a; b */ (x UInt8) ENGINE = Memory", "SELECT 1"]),
        # ... and so is '--' (the old splitter dropped the rest of the line).
        ("SELECT /* -- */ 1; SELECT 2", ["SELECT /* -- */ 1", "SELECT 2"]),
        # Comments nest, as in ClickHouse.
        ("SELECT 1 /* /* ; */ ; */; SELECT 2", ["SELECT 1 /* /* ; */ ; */", "SELECT 2"]),
        # A heredoc is a string.
        ("SELECT $$a; b$$; SELECT $x$c; d$x$", ["SELECT $$a; b$$", "SELECT $x$c; d$x$"]),
        # '//' and '# ' comments run to the end of the line, like '--'.
        ("SELECT 1 // one; two\n;SELECT 2 # three; four", ["SELECT 1", "SELECT 2"]),
        # Blanks and comments alone are no statement (the old one sent '/* end */' alone).
        ("SELECT 1;\n/* end */\n", ["SELECT 1"]),
    ],
)  # fmt: skip
def test_what_the_old_splitter_got_wrong(sql: str, statements: list[str]) -> None:
    assert split_statements(sql) == statements
    assert _old_split_statements(sql) != statements


def test_tokens_say_kind_depth_and_where_they_start() -> None:
    assert tokens("SELECT (a, 'x') -- c\n/* d */ $$e$$") == [
        Token("word", "SELECT", 0, 0),
        Token("punct", "(", 0, 7),
        Token("word", "a", 1, 8),
        Token("punct", ",", 1, 9),
        Token("string", "'x'", 1, 11),
        Token("punct", ")", 0, 14),
        Token("string", "$$e$$", 0, 29),
    ]


@pytest.mark.parametrize(
    "query",
    ["SELECT 1", "SELECT 1;", "SELECT 1; SELECT 2", "SELECT '1; 2'", "SELECT 1 /* ; */",
     "SELECT $$;$$ -- ;", "SELECT 1;;", "SELECT `a;b` FROM t; -- done"],
)  # fmt: skip
def test_the_read_only_check_and_the_splitter_count_statements_alike(query: str) -> None:
    try:
        check_read_only(query)
        one = True
    except ValueError as refused:
        assert "one SQL statement at a time" in str(refused)
        one = False
    assert (len(split_statements(query)) == 1) is one
