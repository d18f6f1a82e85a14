"""Raw model-call rows for ``ml_model_calls``, built from a decoded batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from segwatch.collector.model_calls import ModelCallBatch

from .native import Coded, MapColumn
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
    """One row per model call; values keyed by quantity name (``feature.amount``)."""
    n = len(batch)
    names: list[str] = []
    number_parts: list[tuple[npt.NDArray[np.int64], int, npt.NDArray[np.float64]]] = []
    label_parts: list[tuple[npt.NDArray[np.int64], int, npt.NDArray[np.object_]]] = []
    for name, column in (*batch.quantities.items(), *batch.contexts.items()):
        names.append(name)
        number_rows, values = column.number_data()
        if len(number_rows):
            number_parts.append((number_rows, len(names) - 1, values))
        label_rows, labels = column.label_data()
        if len(label_rows):
            label_parts.append((label_rows, len(names) - 1, labels))
    out = CallRows()
    c = out.columns
    models = batch.models
    model_index = np.asarray(batch.model_index, dtype=np.int64)
    c["timestamp"] = np.asarray(batch.start_ns, dtype=np.int64)  # DateTime64(9): nanoseconds
    c["trace_id"] = [t.hex() for t in batch.trace_ids]
    c["span_id"] = [s.hex() for s in batch.span_ids]
    c["duration_ns"] = np.asarray(batch.duration_ns, dtype=np.uint64)
    c["model_name"] = Coded(model_index, [m[0] for m in models])
    c["model_version"] = Coded(model_index, [m[1] for m in models])
    c["model_stage"] = Coded(model_index, [m[2] for m in models])
    c["operation"] = batch.operations
    c["prediction_id"] = batch.prediction_ids
    c["service_name"] = batch.service_names
    c["numbers"] = _row_map(n, names, number_parts)
    c["strings"] = _row_map(n, names, label_parts)
    return out


def _row_map(n: int, names: list[str], parts: list[tuple[Any, int, Any]]) -> MapColumn:
    """Each row's (name → value) entries, gathered from the columns that have a value there."""
    if not parts:
        return MapColumn(np.zeros(n, dtype=np.uint64), Coded(np.zeros(0, np.int64), names), [])
    rows = np.concatenate([r for r, _, _ in parts])
    keys = np.concatenate([np.full(len(r), k, dtype=np.int64) for r, k, _ in parts])
    values = np.concatenate([v for _, _, v in parts])
    order = np.argsort(rows, kind="stable")  # by row, then in column order
    ends = np.cumsum(np.bincount(rows, minlength=n)).astype(np.uint64)
    return MapColumn(ends, Coded(keys[order], names), values[order])
