"""Which raw calls lie in a segment: a SQL condition on ``ml_model_calls`` from a segment's name.

A segment is stored by name (``feature.country`` = ``BR``, ``feature.amount`` =
``[100, 1000)``, ``MISSING``, a cross ``BR × ios``); the raw calls keep every
field's value (``numbers`` and ``strings`` by quantity name). This module turns
the name back into a condition, for what the aggregates cannot answer: the
calls of one segment *without* those of another (see :mod:`.explained`).

The condition's shape comes from this code; every value (dimension, label,
bound) is a query parameter. Bucket labels print their bounds with 6
significant digits (``%g``), so a call within that rounding of a bound may be
counted on the wrong side of it: a few calls, for the questions asked here.
``__other__`` (the values past a field's top K) cannot be told from the name:
:func:`segment_condition` returns None for it.
"""

from __future__ import annotations

import re
from typing import Any

from .lifecycle import cross_parents

__all__ = ["segment_condition"]

_NUMBER = r"(-?(?:[0-9.]+(?:e[+-]?[0-9]+)?|inf))"
_HALF_OPEN = re.compile(rf"^\[{_NUMBER}, {_NUMBER}\)$")  # [a, b): log, linear, edges
_NEGATIVE = re.compile(rf"^\({_NUMBER}, {_NUMBER}\]$")  # (-a, -b]: negative log buckets
_BELOW = re.compile(rf"^< {_NUMBER}$")
_AT_LEAST = re.compile(rf"^>= {_NUMBER}$")
_SPECIAL = {"NaN": "isNaN({v})", "inf": "{v} = inf", "-inf": "{v} = -inf"}


def segment_condition(
    segment_dim: str, segment_value: str, name: str
) -> tuple[str, dict[str, Any]] | None:
    """(condition, parameters) selecting the calls of a segment, or None when its name
    does not say (``__other__``). ``name`` prefixes the parameters (``a``: ``a_dim_0``, ...)
    so two segments' conditions can share one query."""
    if segment_dim == "__all__":
        return "1", {}
    segments = cross_parents(segment_dim, segment_value) or [(segment_dim, segment_value)]
    if "×" in segment_dim and len(segments) == 1:
        return None  # a cross whose value does not split into one per dimension
    parts: list[str] = []
    parameters: dict[str, Any] = {}
    for i, (dim, value) in enumerate(segments):
        one = _one(dim, value, f"{name}_{i}")
        if one is None:
            return None
        parts.append(f"({one[0]})")
        parameters.update(one[1])
    return " AND ".join(parts), parameters


def _one(dim: str, value: str, name: str) -> tuple[str, dict[str, Any]] | None:
    if value == "__other__":
        return None
    key = f"{{{name}_dim:String}}"
    parameters: dict[str, Any] = {f"{name}_dim": dim}
    has_number = f"mapContains(numbers, {key})"
    number = f"numbers[{key}]"
    if value == "MISSING":
        return f"NOT {has_number} AND NOT mapContains(strings, {key})", parameters
    if value in _SPECIAL:
        return f"{has_number} AND {_SPECIAL[value].format(v=number)}", parameters
    bounds = _bounds(value)
    if bounds is not None:
        low, high, closed_low, closed_high = bounds
        conditions = [has_number, f"isFinite({number})"]  # NaN and infinities: segments apart
        if low is not None:
            conditions.append(f"{number} {'>=' if closed_low else '>'} {{{name}_low:Float64}}")
            parameters[f"{name}_low"] = low
        if high is not None:
            conditions.append(f"{number} {'<=' if closed_high else '<'} {{{name}_high:Float64}}")
            parameters[f"{name}_high"] = high
        return " AND ".join(conditions), parameters
    parameters[f"{name}_value"] = value
    # a category (booleans are stored as true/false); "0" is also log buckets' zero
    exact = f"strings[{key}] = {{{name}_value:String}}"
    if value == "0":
        return f"{exact} OR ({has_number} AND {number} = 0)", parameters
    return exact, parameters


def _bounds(value: str) -> tuple[float | None, float | None, bool, bool] | None:
    """(low, high, low included, high included) of a bucket label, or None for a category."""
    if match := _HALF_OPEN.match(value):
        return float(match.group(1)), float(match.group(2)), True, False
    if match := _NEGATIVE.match(value):
        return float(match.group(1)), float(match.group(2)), False, True
    if match := _BELOW.match(value):
        return None, float(match.group(1)), False, False
    if match := _AT_LEAST.match(value):
        return float(match.group(1)), None, True, False
    return None
