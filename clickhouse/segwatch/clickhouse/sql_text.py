"""Reading SQL text: segwatch's one SQL lexer, and the statements of a ``.sql`` file.

Tokens are read as ClickHouse's lexer (``src/Parsers/Lexer.cpp``) reads them:
``'...'`` strings, ``"..."`` and backquoted identifiers (``\\`` and doubled-quote
escapes), ``$tag$...$tag$`` heredocs, ``--``, ``//``, ``# `` and ``#!`` comments to
the end of the line, and *nested* ``/* */`` comments. A keyword, a ``;`` or a
``--`` inside any of them is text.

Two readers build on it: :func:`split_statements` (migrations) and
:func:`~segwatch.clickhouse.read_only.check_read_only` (analysts' queries).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["COMMENTS", "Token", "scan", "split_statements", "tokens"]

_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
_OPEN, _CLOSE = "([", ")]"

COMMENTS = frozenset({"comment", "line comment"})
"""The kinds of :class:`Token` that are comments: ``/* */`` and to the end of the line."""


class Token(NamedTuple):
    """One token of SQL text; blanks are what lies between tokens."""

    kind: str
    """``word``, ``ident`` (quoted identifier), ``string``, ``punct`` or one of :data:`COMMENTS`."""
    text: str
    depth: int
    """Brackets, ``(`` or ``[``, open around it."""
    start: int
    """Offset of its first character in the text."""

    def keyword(self) -> str:
        """The word in upper case; ``""`` for anything but a word."""
        return self.text.upper() if self.kind == "word" else ""


def tokens(sql: str) -> list[Token]:
    """The significant tokens of ``sql``: no blanks, no comments."""
    return [token for token in scan(sql) if token.kind not in COMMENTS]


def scan(sql: str) -> Iterator[Token]:
    """Every token of ``sql`` in order, comments included."""
    depth, i, n = 0, 0, len(sql)
    while i < n:
        char = sql[i]
        if char.isspace():
            i += 1
            continue
        if char in "'\"`":
            kind, end = ("string" if char == "'" else "ident"), _quoted_end(sql, i)
        elif sql.startswith(("--", "//", "# ", "#!"), i):
            kind, end = "line comment", sql.find("\n", i)
            end = n if end < 0 else end
        elif sql.startswith("/*", i):
            kind, end = "comment", _comment_end(sql, i)
        elif char == "$" and (end := _heredoc_end(sql, i)) > 0:
            kind = "string"
        elif char in _WORD:
            kind, end = "word", i + 1
            while end < n and sql[end] in _WORD:
                end += 1
        else:
            if char in _CLOSE:
                depth = max(depth - 1, 0)
            yield Token("punct", char, depth, i)
            if char in _OPEN:
                depth += 1
            i += 1
            continue
        yield Token(kind, sql[i:end], depth, i)
        i = end


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql``, split at each ``;`` the lexer reads as punctuation, stripped.

    A ``;`` inside a string, a quoted identifier, a heredoc or a comment is
    text. Line comments are cut out of a statement's text (up to, not
    including, the end of their line), so that no statement ends inside one
    that would swallow whatever is joined after it; ``/* */`` comments stay
    (the ``/*@marker*/`` of a detector's fragments, for one). A stretch of
    blanks and comments alone is no statement.
    """
    statements: list[str] = []
    pieces: list[str] = []
    position, significant = 0, False
    for token in scan(sql):
        ends_statement = token.kind == "punct" and token.text == ";"
        if ends_statement or token.kind == "line comment":
            pieces.append(sql[position : token.start])
            position = token.start + len(token.text)
        elif token.kind != "comment":
            significant = True
        if ends_statement:
            if significant:
                statements.append("".join(pieces).strip())
            pieces, significant = [], False
    pieces.append(sql[position:])
    if significant:
        statements.append("".join(pieces).strip())
    return statements


def _quoted_end(sql: str, start: int) -> int:
    """Past the closing quote of the string or identifier opened at ``start``."""
    quote, i, n = sql[start], start + 1, len(sql)
    while i < n:
        if sql[i] == "\\":
            i += 2
        elif sql[i] == quote:
            if sql.startswith(quote, i + 1):  # a doubled quote is an escaped one
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n  # not closed: the engine refuses it


def _comment_end(sql: str, start: int) -> int:
    """Past the ``*/`` that closes the comment opened at ``start``; they nest."""
    nesting, i, n = 1, start + 2, len(sql)
    while i + 2 <= n:
        if sql.startswith("/*", i):
            nesting, i = nesting + 1, i + 2
        elif sql.startswith("*/", i):
            nesting, i = nesting - 1, i + 2
            if nesting == 0:
                return i
        else:
            i += 1
    return n


def _heredoc_end(sql: str, start: int) -> int:
    """Past the heredoc (``$tag$...$tag$``) opened at ``start``; 0 when there is none."""
    close = sql.find("$", start + 1)
    if close < 0:
        return 0
    tag = sql[start : close + 1]
    end = sql.find(tag, close + 1)
    return 0 if end < 0 else end + len(tag)
