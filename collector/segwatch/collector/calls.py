"""Raw model-call rows for ``ml_model_calls``, built from a decoded batch."""

from __future__ import annotations

from .columns import ModelCallBatch
from .rows import TableRows

__all__ = ["CALL_COLUMNS", "CallRows", "call_rows"]

CALL_COLUMNS = (
    "timestamp",
    "trace_id",
    "span_id",
    "duration_ns",
    "model_name",
    "model_version",
    "model_stage",
    "operation",
    "prediction_id",
    "service_name",
    "numbers",
    "strings",
)


class CallRows(TableRows):
    """Rows of ``ml_model_calls``."""

    table = "ml_model_calls"
    column_names = CALL_COLUMNS


def call_rows(batch: ModelCallBatch) -> CallRows:
    """One row per model call; values keyed by quantity name (``feature.amount``)."""
    n = len(batch)
    numbers: list[dict[str, float]] = [{} for _ in range(n)]
    strings: list[dict[str, str]] = [{} for _ in range(n)]
    for name, column in (*batch.quantities.items(), *batch.contexts.items()):
        number_rows, values = column.number_data()
        for row, number in zip(number_rows.tolist(), values.tolist(), strict=True):
            numbers[row][name] = number
        label_rows, labels = column.label_data()
        for row, label in zip(label_rows.tolist(), labels, strict=True):
            strings[row][name] = label
    out = CallRows()
    c = out.columns
    models = batch.models
    c["timestamp"] = batch.start_ns  # DateTime64(9) takes integer nanoseconds
    c["trace_id"] = [t.hex() for t in batch.trace_ids]
    c["span_id"] = [s.hex() for s in batch.span_ids]
    c["duration_ns"] = batch.duration_ns
    c["model_name"] = [models[i][0] for i in batch.model_index]
    c["model_version"] = [models[i][1] for i in batch.model_index]
    c["model_stage"] = [models[i][2] for i in batch.model_index]
    c["operation"] = batch.operations
    c["prediction_id"] = batch.prediction_ids
    c["service_name"] = batch.service_names
    c["numbers"] = numbers
    c["strings"] = strings
    return out
