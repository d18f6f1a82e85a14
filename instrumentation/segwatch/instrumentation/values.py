"""Turning a model's inputs and outputs into OTel attribute values.

numpy and pandas are never imported here: objects from them are recognised by
their shape (``tolist``, ``to_dict``, ``ndim``), so a service that does not use
them does not pay for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .attributes import PREDICTION_OUTPUT

AttributeScalar = str | bool | int | float
"""A value the OTel API accepts as a single attribute."""


def to_attribute_value(value: Any) -> AttributeScalar | None:
    """Convert one feature/output value to an OTel scalar; None means MISSING.

    numpy scalars become Python numbers; ``NaN`` stays a float (the collector
    gives it a segment of its own); anything else that is not a scalar raises
    ``TypeError`` so the caller can report it.
    """
    if value is None:
        return None
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    item = getattr(value, "item", None)  # numpy scalar, 0-d array
    if callable(item) and getattr(value, "ndim", 0) == 0:
        converted = item()
        if isinstance(converted, (bool, str, int, float)):
            return converted
    if _is_missing_marker(value):
        return None
    raise TypeError(f"unsupported value of type {type(value).__name__}")


def _is_missing_marker(value: Any) -> bool:
    # pandas.NA and pandas.NaT are missing values, recognised without importing pandas.
    return type(value).__name__ in {"NAType", "NaTType"}


def features_from_input(
    data: Any, feature_names: Sequence[str] | None = None
) -> dict[str, AttributeScalar | None]:
    """Read one row of named features from a model's first argument.

    Accepts a mapping, a pandas Series, a one-row DataFrame, or a 1-D
    sequence/array whose names come from ``feature_names``.
    """
    if isinstance(data, Mapping):
        return {str(k): to_attribute_value(v) for k, v in data.items()}
    columns = getattr(data, "columns", None)
    if columns is not None and hasattr(data, "iloc"):  # pandas DataFrame
        if len(data) != 1:
            raise ValueError(f"expected a one-row DataFrame, got {len(data)} rows")
        row = data.iloc[0]
        return {str(k): to_attribute_value(v) for k, v in row.items()}
    if hasattr(data, "to_dict") and hasattr(data, "index"):  # pandas Series
        return {str(k): to_attribute_value(v) for k, v in data.items()}
    values = _as_flat_list(data)
    names = list(feature_names or getattr(data, "feature_names_in_", None) or [])
    if not names:
        raise ValueError("positional features need feature_names=")
    if len(names) != len(values):
        raise ValueError(f"{len(values)} feature values for {len(names)} feature_names")
    return {name: to_attribute_value(v) for name, v in zip(names, values, strict=True)}


def _as_flat_list(data: Any) -> list[Any]:
    ndim = getattr(data, "ndim", None)
    if ndim is not None:
        if ndim == 2 and getattr(data, "shape", (0,))[0] == 1:
            data = data[0]
        elif ndim != 1:
            raise ValueError(f"expected a 1-D array of features, got {ndim}-D")
        return list(data.tolist())
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return list(data)
    raise TypeError(f"cannot read features from {type(data).__name__}")


def outputs_from_result(result: Any) -> dict[str, AttributeScalar | None]:
    """Read named outputs from a model's return value.

    A number, string or bool becomes ``prediction``; a mapping gives one output
    per key; a one-element array or list is unwrapped.
    """
    if isinstance(result, Mapping):
        return {str(k): to_attribute_value(v) for k, v in result.items()}
    one_element_array = getattr(result, "ndim", None) == 1 and len(result) == 1
    if one_element_array or (isinstance(result, (list, tuple)) and len(result) == 1):
        result = result[0]
    return {PREDICTION_OUTPUT: to_attribute_value(result)}
