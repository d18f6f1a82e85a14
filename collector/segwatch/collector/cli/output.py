"""Query results for people (aligned text) and for programs (JSON); a progress bar."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from segwatch.clickhouse.queries import QueryResult

__all__ = ["print_table", "progress_bar"]

_MAX_CELL = 72


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.6g}"
    text = str(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def print_table(table: QueryResult, out: TextIO, as_json: bool = False) -> None:
    """Print ``table`` as aligned columns, or as one JSON object with ``--json``."""
    if as_json:
        json.dump(table.to_json(), out)
        out.write("\n")
        return
    cells = [[_cell(v) for v in row] for row in table.rows]
    widths = [len(c) for c in table.columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

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
