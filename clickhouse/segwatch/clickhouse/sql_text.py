"""Reading segwatch's ``.sql`` files into statements."""

from __future__ import annotations

__all__ = ["split_statements"]


def split_statements(sql: str) -> list[str]:
    """Split a file into statements at semicolons, dropping ``--`` comments.

    Quotes are respected: a ``;`` or ``--`` inside a string literal (``'...'``,
    with ``''`` or ``\\'`` escapes) or a quoted identifier is text, not syntax.
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
