"""Batch spans: one span that records a model call on many rows.

A batch span has ``ml.batch.size = N`` and carries its rows as plain arrays
(each ``ml.feature.*``/``ml.output.*``/``ml.metric.*``/``ml.context.*`` value
an array of N elements, empty elements MISSING), as ``ml.batch.columns``
(docs/batch-columns.md), or both for different columns. A scalar value on a
batch span holds for every row. ``ml.prediction.id`` may be an array of N ids.
Everything is validated before any row is added, so a bad batch span is
rejected whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segwatch.collector.model_calls import Column, LabelChunk, ModelCallBatch
from segwatch.instrumentation import attributes as attr

from .batch_columns import BatchColumnsError, DecodedColumn, decode_columns

__all__ = ["MAX_BATCH_ROWS", "BatchSpanError", "decode_batch_span"]

MAX_BATCH_ROWS = 1_000_000
"""The most rows one batch span may carry."""


class BatchSpanError(ValueError):
    """A batch span that cannot be read; the message says why."""


def _scalar(value: Any, kind: str | None) -> tuple[bool, Any] | None:
    """(is_number, value) of one AnyValue; None for an empty or unsupported one."""
    if kind == "double_value":
        return True, value.double_value
    if kind == "int_value":
        return True, float(value.int_value)
    if kind == "string_value":
        return False, value.string_value
    if kind == "bool_value":
        return False, "true" if value.bool_value else "false"
    return None


def decode_batch_span(
    span: Any, batch: ModelCallBatch, columns_for: Any, first_row: int, max_rows: int | None = None
) -> tuple[int, list[str] | None]:
    """Add the rows of one batch span to ``batch``'s columns, from row ``first_row`` on.

    ``columns_for(key)`` maps an attribute key to its :class:`Column` (or not).
    ``max_rows`` (None: :data:`MAX_BATCH_ROWS`) bounds the rows: a few bytes of
    ``ml.batch.size`` and scalars would otherwise make a million calls.
    Returns the number of rows and the per-row prediction ids if the span has
    an array of them. Raises :class:`BatchSpanError`; nothing is added then.
    """
    found = _read_attributes(span, columns_for, max_rows)
    size, decoded = _validate(found)
    _add_rows(found, size, decoded, columns_for, first_row)
    return size, found.prediction_ids


@dataclass
class _BatchAttributes:
    """What a batch span's attributes hold, before any of it is checked against the size."""

    size: int | None = None
    payload: bytes | None = None  # ml.batch.columns
    prediction_ids: list[str] | None = None
    # (key, column, the array's values) and (column, is_number, the value for every row)
    arrays: list[tuple[str, Column, list[Any]]] = field(default_factory=list)
    scalars: list[tuple[Column, bool, Any]] = field(default_factory=list)


def _read_attributes(span: Any, columns_for: Any, max_rows: int | None) -> _BatchAttributes:
    """The span's size, columns payload, ids, arrays and scalars; a bad size raises at once."""
    found = _BatchAttributes()
    for kv in span.attributes:
        key, value = kv.key, kv.value
        kind = value.WhichOneof("value")
        if key == attr.ML_BATCH_SIZE:
            if kind != "int_value" or not 1 <= value.int_value <= MAX_BATCH_ROWS:
                raise BatchSpanError(f"{attr.ML_BATCH_SIZE} must be an int from 1 to "
                                     f"{MAX_BATCH_ROWS}")  # fmt: skip
            found.size = size = int(value.int_value)
            if max_rows is not None and size > max_rows:
                raise BatchSpanError(
                    f"{attr.ML_BATCH_SIZE} {size} would pass the request's limit of model calls "
                    f"(receiver.limits.max_spans_per_request, each batch row counting as one)"
                )
        elif key == attr.ML_BATCH_COLUMNS:
            if kind != "bytes_value":
                raise BatchSpanError(f"{attr.ML_BATCH_COLUMNS} must be bytes")
            found.payload = bytes(value.bytes_value)
        elif key == attr.ML_PREDICTION_ID and kind == "array_value":
            found.prediction_ids = [v.string_value for v in value.array_value.values]
        else:
            column = columns_for(key)
            if not isinstance(column, Column):
                continue
            if kind == "array_value":
                found.arrays.append((key, column, list(value.array_value.values)))
            else:
                scalar = _scalar(value, kind)
                if scalar is not None:
                    found.scalars.append((column, *scalar))
    return found


def _validate(found: _BatchAttributes) -> tuple[int, list[DecodedColumn]]:
    """The size and the decoded ``ml.batch.columns``, once everything agrees with the size."""
    size = found.size
    if size is None:
        raise BatchSpanError(f"array values or {attr.ML_BATCH_COLUMNS} need {attr.ML_BATCH_SIZE}")
    for key, _, values in found.arrays:
        if len(values) != size:
            raise BatchSpanError(f"{key} has {len(values)} values, {attr.ML_BATCH_SIZE} is {size}")
    prediction_ids = found.prediction_ids
    if prediction_ids is not None and len(prediction_ids) != size:
        raise BatchSpanError(
            f"{attr.ML_PREDICTION_ID} has {len(prediction_ids)} ids for {size} rows"
        )
    try:
        decoded = decode_columns(found.payload, size) if found.payload is not None else []
    except BatchColumnsError as exc:
        raise BatchSpanError(str(exc)) from exc
    in_arrays = {key[3:] for key, _, _ in found.arrays}
    for column_data in decoded:
        if column_data.name in in_arrays:
            raise BatchSpanError(f"{column_data.name} is both an array and in ml.batch.columns")
    return size, decoded


def _add_rows(
    found: _BatchAttributes,
    size: int,
    decoded: list[DecodedColumn],
    columns_for: Any,
    first_row: int,
) -> None:
    """The validated values, as rows ``first_row`` to ``first_row + size - 1`` of the columns."""
    rows = np.arange(first_row, first_row + size, dtype=np.int64)
    for _, column, values in found.arrays:
        for i, element in enumerate(values):
            scalar = _scalar(element, element.WhichOneof("value"))
            if scalar is None:
                continue  # an empty element is MISSING
            is_number, item = scalar
            if is_number:
                column.number_rows.append(first_row + i)
                column.numbers.append(item)
            else:
                column.label_rows.append(first_row + i)
                column.labels.append(item)
    for column_data in decoded:
        column = columns_for("ml." + column_data.name)
        if not isinstance(column, Column):
            continue
        valid = column_data.valid
        if column_data.numbers is not None:
            column.number_chunks.append((rows[valid], column_data.numbers[valid]))
        elif column_data.labels is not None:
            column.label_chunks.append(LabelChunk.of(rows[valid], column_data.labels[valid]))
    for column, is_number, item in found.scalars:
        if is_number:
            column.number_chunks.append((rows, np.full(size, item, dtype=np.float64)))
        else:
            column.label_chunks.append(LabelChunk(rows, np.zeros(size, dtype=np.int64), [item]))
