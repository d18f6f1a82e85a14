"""Query results for people (aligned text) and for programs (JSON); a progress bar.

The table is plain text that scripts read as well as people: a header, a rule
of dashes, one line per row (a value's newlines and other control characters
are escaped, so a row never spans lines), columns two spaces apart, and a
``(N rows)`` line. Columns are aligned by terminal cells, not by ``len()``:
East Asian wide and fullwidth characters (CJK) take two cells, combining marks
and format characters (accents, zero-width joiners, variation selectors)
none, as ``unicodedata`` says. Emoji sequences joined by zero-width joiners
count as their parts, where terminals themselves disagree. Values are never
cut: on a terminal, a table wider than the terminal
(``shutil.get_terminal_size``) has its widest columns narrowed (to
:data:`MIN_WRAPPED` cells at the least) and their values wrapped onto
continuation lines (at spaces where it can); a table that cannot fit so (many
columns) is printed a row at a time, a ``column: value`` line each, as
ClickHouse's Vertical format does (psql's ``\\x auto`` does the same). Into a
pipe or a file every row stays one line, whole.

Values as ClickHouse's own client shows them: NULL is ``ᴺᵁᴸᴸ`` (clickhouse-client's
Pretty formats), NaN ``nan``, infinities ``inf``/``-inf``; an empty string is
``""``, so that it is not mistaken for a missing value; maps, arrays and tuples
are JSON (as ``--json`` prints them), not Python reprs. ``--json`` is strict
JSON: NULL is ``null``, NaN and infinities the strings ``"nan"``, ``"inf"``.

Why not ``rich`` (issue 15 weighed it): its Table lays every cell out through
its renderer, far slower than this on the result sizes a query may return
(``api.max_result_rows``: 100,000 by default), and it has to be held to no
colour and a fixed width to print text that scripts can read. Its one gain
here, grapheme-aware widths for emoji sequences, does not pay for four more
packages in the collector's install. The progress bar serves one command
(``segwatch baseline`` on a store it opens itself); drawing it only on a
terminal was all it lacked.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from segwatch.clickhouse.queries import QueryResult, json_value

__all__ = ["EMPTY", "NULL", "cell_width", "format_cell", "print_table", "progress_bar", "wrap_cell"]

NULL = "ᴺᵁᴸᴸ"
"""How a NULL prints: clickhouse-client's glyphs, which no ordinary string is mistaken for."""
EMPTY = '""'
"""How an empty string prints: visible, and apart from NULL."""
MIN_WRAPPED = 30
"""Terminal cells a wrapped column keeps: a table that cannot fit the terminal with its long
columns this narrow is printed a row at a time instead (ClickHouse's Vertical format)."""

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
    """A value as one table cell: one line (control characters escaped), whole."""
    if value is None:
        return NULL
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.6g}"
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(json_value(value, nan="nan"), ensure_ascii=False)  # as --json
    else:
        text = str(value)
    return text.translate(_ESCAPES) if text else EMPTY


def wrap_cell(text: str, width: int) -> list[str]:
    """``text`` as lines of at most ``width`` terminal cells, broken after a space where
    one falls in the line, else inside a word; a character wider than ``width`` still gets
    a line of its own."""
    lines: list[str] = []
    while cell_width(text) > width:
        cells, end, last_space = 0, 0, -1
        for end, char in enumerate(text):
            cells += _char_width(char)
            if cells > width:
                break
            if char == " ":
                last_space = end
        cut = last_space + 1 if last_space > 0 else max(end, 1)
        lines.append(text[:cut].rstrip(" "))
        text = text[cut:]
    lines.append(text)
    return lines


def print_table(table: QueryResult, out: TextIO, as_json: bool = False) -> None:
    """Print ``table`` as aligned columns, or as one JSON object with ``--json``.

    On a terminal, a table wider than the terminal has its long columns narrowed
    and their values wrapped; one that cannot fit so is printed a row at a time,
    one ``column: value`` line each (ClickHouse's Vertical format), values wrapped.
    Elsewhere (a pipe, a file) each row is one line.
    """
    if as_json:
        json.dump(table.to_json(), out)
        out.write("\n")
        return
    cells = [[format_cell(v) for v in row] for row in table.rows]
    widths = [cell_width(c) for c in table.columns]
    for row in cells:
        widths = [max(w, cell_width(c)) for w, c in zip(widths, row, strict=True)]
    if _is_terminal(out):
        columns = shutil.get_terminal_size().columns
        fitted = _fit(widths, columns)
        if fitted is None:
            _print_vertical(table.columns, cells, out, columns)
            return
        widths = fitted

    def lines(values: list[str]) -> Iterator[str]:
        wrapped = [wrap_cell(v, w) for v, w in zip(values, widths, strict=True)]
        for i in range(max(len(w) for w in wrapped) if wrapped else 1):
            parts = [w[i] if i < len(w) else "" for w in wrapped]
            padded = (p + " " * (w - cell_width(p)) for p, w in zip(parts, widths, strict=True))
            yield "  ".join(padded).rstrip()

    for text in lines(table.columns):
        out.write(text + "\n")
    out.write("  ".join("-" * w for w in widths).rstrip() + "\n")
    for row in cells:
        for text in lines(row):
            out.write(text + "\n")
    out.write(_count(cells))


def _print_vertical(names: list[str], cells: list[list[str]], out: TextIO, columns: int) -> None:
    """``Row N:``, a rule, then ``name: value`` per column, values wrapped under themselves."""
    indent = max((cell_width(n) for n in names), default=0) + 2  # "name:" and a space
    room = max(columns - indent, MIN_WRAPPED)
    for number, row in enumerate(cells, 1):
        title = f"Row {number}:"
        out.write(("\n" if number > 1 else "") + f"{title}\n{'─' * len(title)}\n")
        for name, value in zip(names, row, strict=True):
            label = f"{name}:" + " " * (indent - cell_width(name) - 1)
            for k, part in enumerate(wrap_cell(value, room)):
                out.write((label if k == 0 else " " * indent) + part + "\n")
    out.write(("\n" if cells else "") + _count(cells))


def _count(cells: list[list[str]]) -> str:
    return f"({len(cells)} row{'s' if len(cells) != 1 else ''})\n"


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except ValueError:  # closed
        return False


def _fit(widths: list[int], columns: int) -> list[int] | None:
    """Column widths that fit ``columns`` cells (two between columns), narrowing the widest
    first, none below :data:`MIN_WRAPPED` (a narrower one keeps its width); ``None`` when
    the table cannot fit so."""
    widths = list(widths)
    room = columns - 2 * (len(widths) - 1)
    while sum(widths) > room:
        widest = max(range(len(widths)), key=widths.__getitem__)
        if widths[widest] <= MIN_WRAPPED:
            return None  # every column is as narrow as it may be
        runner_up = max((w for i, w in enumerate(widths) if i != widest), default=0)
        excess = sum(widths) - room
        widths[widest] = max(runner_up, MIN_WRAPPED, widths[widest] - excess)
        if widths[widest] == runner_up and runner_up > MIN_WRAPPED and excess > 0:
            widths[widest] -= 1  # ties: narrow them in turn
    return widths


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
