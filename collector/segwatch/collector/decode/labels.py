"""OTLP log requests → delayed-label rows for ``ml_labels``.

A label is a log record whose event name is ``ml.label`` (the ``event_name``
field, or an ``event.name`` attribute from SDKs that predate the field) with
``ml.prediction.id``, ``ml.model.name`` and at least one ``ml.label.<name>``.
Other log records are not labels and are ignored; a label record missing one
of those is rejected and counted for the OTLP partial-success answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from segwatch.collector.store.rows import TableRows
from segwatch.instrumentation import attributes as attr

from .reference_reader import service_name

__all__ = ["LABEL_COLUMNS", "LABEL_SCHEMA", "LabelBatch", "LabelRows", "decode_labels"]

LABEL_SCHEMA = {
    "timestamp": "DateTime64(9, 'UTC')",
    "model_name": "LowCardinality(String)",
    "prediction_id": "String",
    "numbers": "Map(LowCardinality(String), Float64)",
    "strings": "Map(LowCardinality(String), String)",
    "trace_id": "String",
    "service_name": "LowCardinality(String)",
}
"""Columns of ``ml_labels`` written by the collector, and their types, in insert order."""
LABEL_COLUMNS = tuple(LABEL_SCHEMA)


class LabelRows(TableRows):
    """Rows of ``ml_labels``."""

    table = "ml_labels"
    column_names = LABEL_COLUMNS
    column_types = tuple(LABEL_SCHEMA.values())


@dataclass
class LabelBatch:
    rows: LabelRows = field(default_factory=LabelRows)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < 5 and reason not in self.reasons:
            self.reasons.append(reason)


def _is_label(record: Any) -> bool:
    if record.event_name:
        return bool(record.event_name == attr.ML_LABEL_EVENT)
    return any(
        kv.key == "event.name" and kv.value.string_value == attr.ML_LABEL_EVENT
        for kv in record.attributes
    )


def decode_labels(request: ExportLogsServiceRequest) -> LabelBatch:
    """Extract the label records of a request."""
    batch = LabelBatch()
    c = batch.rows.columns
    prefix = attr.ML_LABEL_PREFIX
    for resource_logs in request.resource_logs:
        service = service_name(resource_logs.resource)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                if not _is_label(record):
                    continue
                model = prediction = ""
                numbers: dict[str, float] = {}
                strings: dict[str, str] = {}
                for kv in record.attributes:
                    key, value = kv.key, kv.value
                    kind = value.WhichOneof("value")
                    if key == attr.ML_MODEL_NAME and kind == "string_value":
                        model = value.string_value
                    elif key == attr.ML_PREDICTION_ID and kind == "string_value":
                        prediction = value.string_value
                    elif key.startswith(prefix) and len(key) > len(prefix):
                        name = key[3:]  # label.<name>
                        if kind == "double_value":
                            numbers[name] = value.double_value
                        elif kind == "int_value":
                            numbers[name] = float(value.int_value)
                        elif kind == "string_value":
                            strings[name] = value.string_value
                        elif kind == "bool_value":
                            strings[name] = "true" if value.bool_value else "false"
                if not model or not prediction or not (numbers or strings):
                    batch.reject(
                        f"{attr.ML_LABEL_EVENT} record needs string {attr.ML_MODEL_NAME}, "
                        f"string {attr.ML_PREDICTION_ID} and at least one {prefix}<name>"
                    )
                    continue
                c["timestamp"].append(record.time_unix_nano or record.observed_time_unix_nano)
                c["model_name"].append(model)
                c["prediction_id"].append(prediction)
                c["numbers"].append(numbers)
                c["strings"].append(strings)
                c["trace_id"].append(record.trace_id.hex())
                c["service_name"].append(service)
    return batch
