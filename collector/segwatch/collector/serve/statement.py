"""Statement: what a request's SQL is, read the way ClickHouse's HTTP handler reads it.

The query is the ``query`` URL parameter, a line feed, then the body. For an
``INSERT ... FORMAT <name>`` the statement ends at the format's name and the
data begins after the blanks and the one line feed that follow it; the
statement itself is short, so only a head of the stream is read to find where
(:data:`HEAD_BYTES`). Any other statement (``INSERT ... VALUES`` included) is
all SQL.

The head is read as Latin-1: one character per byte, so token offsets are
byte offsets, and multi-byte UTF-8 inside names or strings cannot move them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from segwatch.clickhouse.sql_text import COMMENTS, Token, scan, tokens

from .errors import ServeError

__all__ = ["HEAD_BYTES", "Statement", "read_statement"]

HEAD_BYTES = 1 << 20
"""How much of the stream may hold an INSERT's statement before its data (ClickHouse's
max_query_size is 256 KiB)."""

# Statements that answer with a result set, even an empty one (X-ClickHouse-Format).
_RESULT_KEYWORDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "KILL", "VALUES"}
)


@dataclass(frozen=True)
class Statement:
    """The SQL to run and, for an INSERT with data, where its data starts in the stream."""

    sql: str
    kind: str
    """The first keyword, upper case (``SELECT``, ``INSERT``, ...); ``(`` for a bracketed query."""
    data_offset: int | None = None
    """Byte offset of the INSERT's data in the stream; None when there is no data."""
    input_format: str = ""
    output_format: str = ""
    """The statement's own ``FORMAT`` clause (outside an INSERT); "" when it has none."""
    settings_at: int | None = None
    """Offset in ``sql`` of an INSERT's ``SETTINGS`` clause (``FROM INFILE`` goes before it)."""
    needs_all: bool = False
    """An INSERT whose data is SQL (``VALUES``) longer than the head: read the rest, then
    read the statement again."""

    @property
    def answers_rows(self) -> bool:
        """Whether it answers with a result set (ClickHouse then names its format)."""
        return self.kind in _RESULT_KEYWORDS or self.kind == "("


def read_statement(head: bytes, complete: bool) -> Statement:
    """The statement at the start of ``head``; ``complete``: head is the whole stream."""
    text = head.decode("latin-1")
    lazy = (token for token in scan(text) if token.kind not in COMMENTS)
    first = next(lazy, None)
    if first is None:
        raise ServeError("SYNTAX_ERROR", "Empty query")
    kind = first.keyword() or first.text
    if kind == "INSERT":
        # Lazily: the data after FORMAT may be a GiB of bytes that are no SQL.
        insert = _insert_with_data(text, lazy)
        if insert is not None:
            return insert
    if not complete and kind == "INSERT":
        return Statement("", kind, needs_all=True)
    if not complete:
        raise ServeError(
            "QUERY_IS_TOO_LARGE",
            f"the query is longer than {HEAD_BYTES} bytes and is no INSERT with data",
        )
    sql = head.decode("utf-8", errors="strict")
    significant = tokens(text)
    _one_statement(significant)
    return Statement(sql, kind, output_format=_output_format(significant))


def _one_statement(significant: list[Token]) -> None:
    """Refuse a second statement after a ``;``, as ClickHouse's HTTP interface does."""
    for index, token in enumerate(significant):
        if token.kind == "punct" and token.text == ";":
            if any(t.kind != "punct" or t.text != ";" for t in significant[index + 1 :]):
                raise _multi_statements()
            return


def _multi_statements() -> ServeError:
    return ServeError("SYNTAX_ERROR", "Multi-statements are not allowed")


def _insert_with_data(text: str, significant: Iterator[Token]) -> Statement | None:
    """The INSERT's statement and data offset, if its data follows a FORMAT clause."""
    settings_at = None
    for token in significant:
        if token.depth:
            continue
        word = token.keyword()
        if token.kind == "punct" and token.text == ";":
            raise _multi_statements()  # a statement before FORMAT: one request, one statement
        if word in ("VALUES", "SELECT", "WITH"):
            return None  # the data (or the query) is SQL
        if word == "SETTINGS" and settings_at is None:
            settings_at = token.start
        name = next(significant, None) if word == "FORMAT" else None
        if name is not None:
            offset = _data_start(text, name.start + len(name.text))
            sql = text[: token.start].encode("latin-1").decode("utf-8")
            return Statement(
                sql,
                "INSERT",
                data_offset=offset,
                input_format=name.text.strip('`"'),
                settings_at=None
                if settings_at is None
                else len(text[:settings_at].encode("latin-1").decode("utf-8")),
            )
    return None


def _data_start(text: str, position: int) -> int:
    """Past the blanks and the one line feed after the format's name (ParserInsertQuery)."""
    while position < len(text) and text[position] in " \t\f":
        position += 1
    if text.startswith("\r", position):
        position += 1
    if text.startswith("\n", position):
        position += 1
    return position


def _output_format(significant: list[Token]) -> str:
    """The name after the last top-level FORMAT keyword, "" when there is none."""
    for index in range(len(significant) - 2, -1, -1):
        token = significant[index]
        if token.depth == 0 and token.keyword() == "FORMAT":
            return significant[index + 1].text.strip('`"')
    return ""
