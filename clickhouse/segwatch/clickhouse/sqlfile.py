"""Reading segwatch's ``.sql`` files into statements."""

from __future__ import annotations

import re

__all__ = ["split_statements"]

_LINE_COMMENT = re.compile(r"--[^\n]*")


def split_statements(sql: str) -> list[str]:
    """Split a file into statements at semicolons that end a line.

    Line comments are dropped first; a semicolon inside a string literal that
    ends a line is not supported (segwatch's own files never have one).
    """
    body = _LINE_COMMENT.sub("", sql)
    parts = re.split(r";[ \t]*(?:\n|$)", body)
    return [part.strip() for part in parts if part.strip()]
