"""Query results for people (aligned text) and for programs (JSON); a progress bar.

The table is plain text that scripts read as well as people: a header, a rule
of dashes, one line per row (a value's newlines and other control characters
are escaped, so a row never spans lines), columns two spaces apart, and a
``(N rows)`` line. Columns are aligned by terminal cells, not by ``len()``:
East Asian wide and fullwidth characters (CJK) take two cells, combining marks
and format characters (accents, zero-width joiners, variation selectors)
none, as ``unicodedata`` says. Emoji sequences joined by zero-width joiners
count as their parts, where terminals themselves disagree. A value wider than
72 cells is cut with ``…``. NULL is a blank cell, NaN ``nan``; maps, arrays and
tuples are JSON (as ``--json`` prints them), not Python reprs.

Why not ``rich`` (issue 15 weighed it): its Table lays every cell out through
its renderer, far slower than this on the result sizes a query may return
(``api.max_result_rows``: 100,000 by default), and it has to be held to no
colour, no wrapping and a fixed width to print text that scripts can read.
Its one gain here, grapheme-aware widths for emoji sequences, does not pay
for four more packages in the collector's install. The progress bar serves
one command (``segwatch baseline`` on a store it opens itself); drawing it
only on a terminal was all it lacked.
"""

from __future__ import annotations

import json
import math
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from segwatch.clickhouse.queries import QueryResult, json_value

__all__ = ["cell_width", "format_cell", "print_table", "progress_bar"]

MAX_CELL = 72
"""Terminal cells a value may take before it is cut with ``…``."""

_ZERO_WIDTH = frozenset({"Mn", "Me", "Cf"})  # combining marks; format characters (ZWJ, ZWSP)
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                 0x2028: "\\u2028", 0x2029: "\\u2029"})  # fmt: skip


def cell_width(text: str) -> int:
    """The terminal cells ``text`` takes (control characters are escaped before this)."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def _char_width(char: str) -> int:
    if unicodedata.category(char) in _ZERO_WIDTH:
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def format_cell(value: Any) -> str:
    """A value as one table cell: one line, at most :data:`MAX_CELL` cells wide."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.6g}"
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(json_value(value), ensure_ascii=False)
    else:
        text = str(value)
    return _cut(text.translate(_ESCAPES))


def _cut(text: str) -> str:
    if cell_width(text) <= MAX_CELL:
        return text
    room = MAX_CELL - 1  # one cell for the ellipsis
    for end, char in enumerate(text):
        room -= _char_width(char)
        if room < 0:
            return text[:end] + "…"
    return text


def print_table(table: QueryResult, out: TextIO, as_json: bool = False) -> None:
    """Print ``table`` as aligned columns, or as one JSON object with ``--json``."""
    if as_json:
        json.dump(table.to_json(), out)
        out.write("\n")
        return
    cells = [[format_cell(v) for v in row] for row in table.rows]
    widths = [cell_width(c) for c in table.columns]
    for row in cells:
        widths = [max(w, cell_width(c)) for w, c in zip(widths, row, strict=True)]

    def line(values: list[str]) -> str:
        padded = (v + " " * (w - cell_width(v)) for v, w in zip(values, widths, strict=True))
        return "  ".join(padded).rstrip()

    out.write(line(table.columns) + "\n")
    out.write(line(["-" * w for w in widths]) + "\n")
    for row in cells:
        out.write(line(row) + "\n")
    out.write(f"({len(cells)} row{'s' if len(cells) != 1 else ''})\n")


@contextmanager
def progress_bar(unit: str, out: TextIO | None = None) -> Iterator[Callable[[int, int], None]]:
    """A bar on ``out`` (default stderr) for a long command; yields ``update(done, total)``.

    On a terminal the bar is redrawn in place. Elsewhere (a log file, a pipe)
    it is printed once, when ``done`` reaches ``total``, so logs do not fill
    with carriage returns. A bar left part-way (the command failed) is ended
    with a newline, so the error that follows starts a line of its own.
    """
    stream = out if out is not None else sys.stderr
    live = stream.isatty()
    unfinished = False

    def update(done: int, total: int) -> None:
        nonlocal unfinished
        finished = done >= total
        if not (live or finished):
            return
        filled = 30 * min(done, total) // max(total, 1)
        bar = f"  [{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,} {unit}"
        print(("\r" if live else "") + bar, end="\n" if finished else "", file=stream,
              flush=True)  # fmt: skip
        unfinished = live and not finished

    try:
        yield update
    finally:
        if unfinished:
            print(file=stream, flush=True)
