"""Which analyst queries the read-only SQL path runs: statements that only read.

ClickHouse's ``readonly=1`` refuses writes, DDL and setting changes, but not
everything that is not a read: ``KILL QUERY`` ends other people's queries
(the collector's own inserts among them), ``USE`` switches the database of a
client the collector shares, ``SELECT ... INTO OUTFILE`` writes a file where
the store runs. So the statement is checked before it is sent, against an
allow-list of the kinds that only read (:data:`READ_STATEMENTS`), and
``readonly=1`` stays on as the second line.

The check reads the query's tokens with :mod:`.sql_text`, as ClickHouse's lexer
does: a keyword inside a string, a quoted identifier, a heredoc or a comment is
text (``select 'FORMAT' AS x`` is a read).
"""

from __future__ import annotations

from . import sql_text
from .sql_text import Token

__all__ = ["READ_STATEMENTS", "check_read_only"]

READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
"""The first keywords of the statements the read-only path runs (``WITH`` leads to a ``SELECT``)."""

_ALLOWED = "SELECT, WITH ... SELECT, SHOW, DESCRIBE (DESC), EXPLAIN and EXISTS"
_OPEN = "(["


def check_read_only(query: str) -> None:
    """Raise ``ValueError`` unless ``query`` is one statement that only reads.

    Refused, each with a message naming what was found: several statements; a
    statement kind outside :data:`READ_STATEMENTS` (``SYSTEM``, ``KILL``,
    ``INSERT``, ``USE``, ...); ``INTO OUTFILE``; and a query's own ``FORMAT``
    clause, since results come back as columns and rows in a format the caller
    picks (the engine would otherwise see two FORMAT clauses and blame one the
    user never wrote).
    """
    tokens = sql_text.tokens(query)
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
        if _is_format_without_name(before, token, after):
            raise ValueError(
                "remove the 'FORMAT' that ends the query: results come back as columns and "
                "rows, in the format the caller asks for (the CLI prints a table, or JSON "
                "with --json)"
            )


def _is_format_clause(
    before: Token | None, token: Token, after: Token | None, then: Token | None
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


def _is_format_without_name(before: Token | None, token: Token, after: Token | None) -> bool:
    """``FORMAT`` ending the query after a value (``SELECT 1 FORMAT``, ``... count()
    FORMAT``, ``SELECT * FORMAT``): a FORMAT clause with no name, where the engine would
    take what the caller appends for the format's name and blame that. After a name
    (``SELECT a, format``) it may be a column, and the engine decides."""
    if token.keyword() != "FORMAT" or token.depth != 0 or before is None:
        return False
    if after is not None and after.text != ";":
        return False
    return before.text in (")", "*") or before.kind == "string" or before.text[0].isdigit()
