"""Printing query results for people (aligned text) and for programs (JSON)."""

from __future__ import annotations

import json
import math
from typing import Any, TextIO

from segwatch.clickhouse.queries import QueryResult

__all__ = ["print_table"]

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
