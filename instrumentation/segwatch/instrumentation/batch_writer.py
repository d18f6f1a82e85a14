"""Writing a batch of rows onto one span: plain arrays, or ``ml.batch.columns``."""

from __future__ import annotations

from typing import Any

from . import attributes as attr
from .batch_columns import encode_columns
from .values import AttributeScalar, to_attribute_value

__all__ = ["DEFAULT_COLUMNS_ABOVE", "batch_attributes", "row_attributes"]

DEFAULT_COLUMNS_ABOVE = 32
"""Batches of more rows than this go as ``ml.batch.columns``, smaller ones as plain arrays.

The OTel Python encoder pays for every array element (the README's span
convention table gives the cost); the bytes attribute costs one copy, however
many rows.
"""


def _values(column: Any) -> list[Any]:
    tolist = getattr(column, "tolist", None)
    return list(tolist()) if callable(tolist) else list(column)


def batch_attributes(columns: dict[str, Any], n: int, columns_above: int) -> dict[str, Any]:
    """The span attributes for ``n`` rows; ``columns`` are keyed ``feature.x``, ``output.y``."""
    out: dict[str, Any] = {attr.ML_BATCH_SIZE: n}
    if n > columns_above:
        out[attr.ML_BATCH_COLUMNS] = encode_columns(columns, n)
        return out
    for name, column in columns.items():
        values = [to_attribute_value(v) for v in _values(column)]
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} values for {n} rows")
        out["ml." + name] = values
    return out


def row_attributes(columns: dict[str, Any], i: int) -> dict[str, AttributeScalar]:
    """The attributes of row ``i`` alone (for one span per row)."""
    out: dict[str, AttributeScalar] = {}
    for name, column in columns.items():
        value = to_attribute_value(column.iloc[i] if hasattr(column, "iloc") else column[i])
        if value is not None:
            out["ml." + name] = value
    return out
