"""Turning one feature or output value into an OTel attribute value.

numpy and pandas are never imported here: objects from them are recognised by
their shape (``tolist``, ``to_dict``, ``ndim``), so a service that does not use
them does not pay for them.
"""

from __future__ import annotations

from typing import Any

AttributeScalar = str | bool | int | float
"""A value the OTel API accepts as a single attribute."""


def to_attribute_value(value: Any) -> AttributeScalar | None:
    """Convert one feature/output value to an OTel scalar; None means MISSING.

    numpy scalars become Python numbers; ``NaN`` stays a float (the collector
    counts it MISSING, as pandas and numpy mean it); anything else that is not a scalar raises
    ``TypeError`` so the caller can report it.
    """
    kind = type(value)
    if kind is float or kind is str or kind is int or kind is bool:
        return value  # type: ignore[no-any-return]  # the common case, no subclass checks
    if value is None:
        return None
    if isinstance(value, (bool, str, int, float)):
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
