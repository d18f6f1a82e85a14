"""Raw model-call rows for ``ml_model_calls``, built from a decoded batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from segwatch.collector.model_calls import ModelCallBatch

from .native import Coded, HexColumn, MapColumn
from .rows import TableRows

__all__ = ["CALL_COLUMNS", "CALL_SCHEMA", "CallRows", "call_rows"]

CALL_SCHEMA = {
    "timestamp": "DateTime64(9, 'UTC')",
    "trace_id": "String",
    "span_id": "String",
    "duration_ns": "UInt64",
    "model_name": "LowCardinality(String)",
    "model_version": "LowCardinality(String)",
    "model_stage": "LowCardinality(String)",
    "operation": "LowCardinality(String)",
    "prediction_id": "String",
    "service_name": "LowCardinality(String)",
    "numbers": "Map(LowCardinality(String), Float64)",
    "strings": "Map(LowCardinality(String), String)",
}
"""Columns of ``ml_model_calls`` and their types, in insert order."""
CALL_COLUMNS = tuple(CALL_SCHEMA)


class CallRows(TableRows):
    """Rows of ``ml_model_calls``."""

    table = "ml_model_calls"
    column_names = CALL_COLUMNS
    column_types = tuple(CALL_SCHEMA.values())


def call_rows(batch: ModelCallBatch) -> CallRows:
    """One row per model call; values keyed by quantity name (``feature.amount``).

    Built without a Python step per row or per map entry: ids stay bytes until
    the Native encoder writes their hex (:class:`~.native.HexColumn`), labels
    stay codes into their columns' dictionaries, and each map entry's place is
    computed with numpy (see :func:`_row_map`).
    """
    n = len(batch)
    names: list[str] = []
    number_parts: list[tuple[npt.NDArray[np.int64], int, npt.NDArray[np.float64]]] = []
    label_parts: list[tuple[npt.NDArray[np.int64], int, npt.NDArray[np.int64]]] = []
    labels: list[str] = []  # every label column's dictionary, one after the other
    for name, column in (*batch.quantities.items(), *batch.contexts.items()):
        names.append(name)
        number_rows, values = column.number_data()
        if len(number_rows):
            number_parts.append((number_rows, len(names) - 1, values))
        label_rows, codes, dictionary = column.label_codes()
        if len(label_rows):
            label_parts.append((label_rows, len(names) - 1, codes + len(labels)))
            labels.extend(dictionary)
    out = CallRows()
    c = out.columns
    models = batch.models
    model_index = np.asarray(batch.model_index, dtype=np.int64)
    c["timestamp"] = np.asarray(batch.start_ns, dtype=np.int64)  # DateTime64(9): nanoseconds
    c["trace_id"] = HexColumn(batch.trace_ids)
    c["span_id"] = HexColumn(batch.span_ids)
    c["duration_ns"] = np.asarray(batch.duration_ns, dtype=np.uint64)
    c["model_name"] = Coded(model_index, [m[0] for m in models])
    c["model_version"] = Coded(model_index, [m[1] for m in models])
    c["model_stage"] = Coded(model_index, [m[2] for m in models])
    c["operation"] = batch.operations
    c["prediction_id"] = batch.prediction_ids
    c["service_name"] = batch.service_names
    c["numbers"] = _row_map(n, names, number_parts, lambda values: values)
    c["strings"] = _row_map(n, names, label_parts, lambda codes: Coded(codes, labels))
    return out


def _row_map(
    n: int,
    names: list[str],
    parts: list[tuple[npt.NDArray[np.int64], int, Any]],
    wrap: Callable[[Any], Any],
) -> MapColumn:
    """Each row's (name → value) entries, gathered from the columns that have a value there.

    ``parts`` are (rows, key, values) per column, in column order; a row's entries
    follow that order. ``wrap`` makes the map's value column from the values joined.
    """
    if not parts:
        empty = np.zeros(0, np.int64)
        return MapColumn(np.zeros(n, dtype=np.uint64), Coded(empty, names), wrap(empty))
    part_rows = [rows for rows, _, _ in parts]
    if all(_every_row(rows, n) for rows in part_rows):
        return _dense_row_map(n, names, parts, wrap)
    counts = np.bincount(np.concatenate(part_rows), minlength=n)
    ends = np.cumsum(counts)
    places = _entry_places(ends - counts, part_rows)
    keys = np.empty(len(places), dtype=np.int64)
    keys[places] = np.concatenate([np.full(len(r), k, dtype=np.int64) for r, k, _ in parts])
    values = np.concatenate([v for _, _, v in parts])
    ordered = np.empty_like(values)
    ordered[places] = values
    return MapColumn(ends.astype(np.uint64), Coded(keys, names), wrap(ordered))


def _every_row(rows: npt.NDArray[np.int64], n: int) -> bool:
    """Whether a column has one value in each of the ``n`` rows, in row order (rows are in
    ``[0, n)``: ``n`` of them strictly increasing are ``0 .. n - 1``)."""
    return len(rows) == n and (n < 2 or bool((rows[1:] > rows[:-1]).all()))


def _dense_row_map(
    n: int,
    names: list[str],
    parts: list[tuple[npt.NDArray[np.int64], int, Any]],
    wrap: Callable[[Any], Any],
) -> MapColumn:
    """:func:`_row_map` when every column has a value in every row (the usual case: a model's
    calls carry the same features): row ``r``'s entries are every column's value ``r``, in
    column order, so the entries are the columns side by side, read row by row (one copy,
    no scatter)."""
    width = len(parts)
    ends = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(width)
    keys = np.tile(np.array([key for _, key, _ in parts], dtype=np.int64), n)
    values = np.column_stack([values for _, _, values in parts]).reshape(-1)
    return MapColumn(ends, Coded(keys, names), wrap(values))


def _entry_places(
    starts: npt.NDArray[np.int64], part_rows: list[npt.NDArray[np.int64]]
) -> npt.NDArray[np.int64]:
    """Where each entry of the joined parts goes: grouped by row, in part order within a row.

    Each part's rows are usually strictly increasing (one value per row), and then
    an entry's place is its row's start plus how many earlier parts filled that row:
    one gather and one scatter per part. Otherwise, a stable sort by row.
    """
    if all(len(r) < 2 or bool((r[1:] > r[:-1]).all()) for r in part_rows):
        filled = starts.copy()
        pieces = []
        for rows in part_rows:
            pieces.append(filled[rows])
            filled[rows] += 1
        return np.concatenate(pieces)
    order = np.argsort(np.concatenate(part_rows), kind="stable")
    places = np.empty(len(order), dtype=np.int64)
    places[order] = np.arange(len(order), dtype=np.int64)
    return places
