"""Which analyst queries the read-only SQL path runs: statements that only read.

ClickHouse's ``readonly=1`` refuses writes, DDL and setting changes, but not
everything that is not a read: ``KILL QUERY`` ends other people's queries
(the collector's own inserts among them), ``USE`` switches the database of a
client the collector shares, ``SELECT ... INTO OUTFILE`` writes a file where
the store runs. So the statement is checked before it is sent, against an
allow-list of the kinds that only read (:data:`READ_STATEMENTS`), and
``readonly=1`` stays on as the second line.

The check reads tokens as ClickHouse's lexer (``src/Parsers/Lexer.cpp``) does:
``'...'`` strings, ``"..."`` and backquoted identifiers (``\\`` and doubled-quote
escapes), ``$tag$...$tag$`` heredocs, ``--``, ``//``, ``# `` and ``#!`` comments to
the end of the line, and *nested* ``/* */`` comments. A keyword inside any of them
is text: ``select 'FORMAT' AS x`` is a read.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["READ_STATEMENTS", "check_read_only"]

READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
"""The first keywords of the statements the read-only path runs (``WITH`` leads to a ``SELECT``)."""

_ALLOWED = "SELECT, WITH ... SELECT, SHOW, DESCRIBE (DESC), EXPLAIN and EXISTS"
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
_OPEN, _CLOSE = "([", ")]"


class _Token(NamedTuple):
    kind: str  # "word", "ident" (quoted identifier), "string" or "punct"
    text: str
    depth: int  # brackets open around it

    def keyword(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


def check_read_only(query: str) -> None:
    """Raise ``ValueError`` unless ``query`` is one statement that only reads.

    Refused, each with a message naming what was found: several statements; a
    statement kind outside :data:`READ_STATEMENTS` (``SYSTEM``, ``KILL``,
    ``INSERT``, ``USE``, ...); ``INTO OUTFILE``; and a query's own ``FORMAT``
    clause, since results come back as columns and rows in a format the caller
    picks (the engine would otherwise see two FORMAT clauses and blame one the
    user never wrote).
    """
    tokens = _tokens(query)
    if not tokens:
        raise ValueError("no SQL statement in the query (only blanks or comments)")
    for i, token in enumerate(tokens[:-1]):
        if token.text == ";" and token.kind == "punct":
            more = tokens[i + 1 :]
            if any(t.text != ";" or t.kind != "punct" for t in more):
                raise ValueError("one SQL statement at a time (found ';' between statements)")
    first = next((t for t in tokens if not (t.kind == "punct" and t.text in _OPEN)), tokens[0])
    kind = first.keyword()
    if kind not in READ_STATEMENTS:
        found = f"{kind} statements are" if kind else f"a query starting with {first.text!r} is"
        raise ValueError(f"{found} not allowed: read-only SQL runs {_ALLOWED}")
    if kind == "WITH" and not any(
        t.keyword() == "SELECT" and t.depth == first.depth for t in tokens
    ):
        raise ValueError(f"WITH must lead to a SELECT: read-only SQL runs {_ALLOWED}")
    for before, token, after, then in zip(
        [None, *tokens], tokens, [*tokens[1:], None], [*tokens[2:], None, None], strict=False
    ):
        if token.keyword() == "INTO" and after is not None and after.keyword() == "OUTFILE":
            raise ValueError("INTO OUTFILE is not allowed: it writes a file where the store runs")
        if _is_format_clause(before, token, after, then):
            assert after is not None
            raise ValueError(
                f"remove 'FORMAT {after.text}': results come back as columns and rows, in the "
                "format the caller asks for (the CLI prints a table, or JSON with --json)"
            )


def _is_format_clause(
    before: _Token | None, token: _Token, after: _Token | None, then: _Token | None
) -> bool:
    """``FORMAT <name>`` closing the query (then the end, ``;`` or ``SETTINGS``).

    Not a column or alias named ``format`` (``SELECT 1 AS format``, ``SELECT
    format FROM t``), nor the ``format(...)`` function.
    """
    if token.keyword() != "FORMAT" or token.depth != 0:
        return False
    if before is not None and before.keyword() == "AS":
        return False
    if after is None or after.kind not in ("word", "ident"):
        return False
    return then is None or then.text == ";" or then.keyword() == "SETTINGS"


def _tokens(query: str) -> list[_Token]:
    """The significant tokens of ``query``: no blanks, no comments."""
    tokens: list[_Token] = []
    depth, i, n = 0, 0, len(query)
    while i < n:
        char = query[i]
        if char.isspace():
            i += 1
        elif char in "'\"`":
            end = _quoted_end(query, i)
            tokens.append(_Token("string" if char == "'" else "ident", query[i:end], depth))
            i = end
        elif query.startswith(("--", "//", "# ", "#!"), i):
            end = query.find("\n", i)
            i = n if end < 0 else end
        elif query.startswith("/*", i):
            i = _comment_end(query, i)
        elif char == "$" and (end := _heredoc_end(query, i)) > 0:
            tokens.append(_Token("string", query[i:end], depth))
            i = end
        elif char in _WORD:
            end = i + 1
            while end < n and query[end] in _WORD:
                end += 1
            tokens.append(_Token("word", query[i:end], depth))
            i = end
        else:
            if char in _CLOSE:
                depth = max(depth - 1, 0)
            tokens.append(_Token("punct", char, depth))
            if char in _OPEN:
                depth += 1
            i += 1
    return tokens


def _quoted_end(query: str, start: int) -> int:
    """Past the closing quote of the string or identifier opened at ``start``."""
    quote, i, n = query[start], start + 1, len(query)
    while i < n:
        if query[i] == "\\":
            i += 2
        elif query[i] == quote:
            if query.startswith(quote, i + 1):  # a doubled quote is an escaped one
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n  # not closed: the engine refuses it


def _comment_end(query: str, start: int) -> int:
    """Past the ``*/`` that closes the comment opened at ``start``; they nest."""
    nesting, i, n = 1, start + 2, len(query)
    while i + 2 <= n:
        if query.startswith("/*", i):
            nesting, i = nesting + 1, i + 2
        elif query.startswith("*/", i):
            nesting, i = nesting - 1, i + 2
            if nesting == 0:
                return i
        else:
            i += 1
    return n


def _heredoc_end(query: str, start: int) -> int:
    """Past the heredoc (``$tag$...$tag$``) opened at ``start``; 0 when there is none."""
    close = query.find("$", start + 1)
    if close < 0:
        return 0
    tag = query[start : close + 1]
    end = query.find(tag, close + 1)
    return 0 if end < 0 else end + len(tag)
