"""Reading a model call's inputs and outputs as named columns of N rows.

One row (a dict, a pandas Series, a 1-row DataFrame, a 1-D array) is a single
call; many rows (a DataFrame, a 2-D array, a list of dicts) are a batch.
numpy and pandas are never imported: their objects are recognised by their
methods (``tolist``, ``iloc``, ``ndim``), so services without them pay nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .attributes import PREDICTION_OUTPUT

__all__ = ["Rows", "read_features", "read_outputs"]

LABEL_OUTPUT = "label"
CONFIDENCE_METRIC = "confidence"


@dataclass
class Rows:
    """``n`` rows as columns (name → sequence of ``n`` values); ``single`` for a one-row call."""

    n: int
    columns: dict[str, Any] = field(default_factory=dict)
    single: bool = True

    def scalars(self) -> dict[str, Any]:
        """A single row's values."""
        return {name: _first(values) for name, values in self.columns.items()}


def _first(values: Any) -> Any:
    if hasattr(values, "iloc"):
        return values.iloc[0]
    return values[0]


def _is_frame(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "iloc") and getattr(data, "ndim", 0) == 2


def _is_series(data: Any) -> bool:
    return hasattr(data, "iloc") and hasattr(data, "index") and getattr(data, "ndim", 0) == 1


def read_features(data: Any, feature_names: Sequence[str] | None = None) -> Rows:
    """The features of a call: one row, or a batch of rows."""
    if isinstance(data, Mapping):
        return Rows(1, {str(k): [v] for k, v in data.items()})
    if _is_frame(data):
        n = len(data)
        return Rows(n, {str(c): data[c] for c in data.columns}, single=n == 1)
    if _is_series(data):
        return Rows(1, {str(k): [v] for k, v in data.items()})
    if (
        isinstance(data, Sequence)
        and not isinstance(data, (str, bytes))
        and data
        and all(isinstance(row, Mapping) for row in data)
    ):
        names = list(dict.fromkeys(str(k) for row in data for k in row))
        columns = {name: [row.get(name) for row in data] for name in names}
        return Rows(len(data), columns, single=len(data) == 1)
    ndim = getattr(data, "ndim", None)
    if ndim is None and isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        ndim = 2 if data and all(isinstance(r, Sequence) and not isinstance(r, str)
                                 for r in data) else 1  # fmt: skip
    names = list(feature_names or [])
    if ndim == 2:
        n = len(data)
        width = len(data[0]) if n else len(names)
        _check_names(names, width)
        if hasattr(data, "tolist") and hasattr(data, "shape"):  # numpy: column views
            columns = {name: data[:, j] for j, name in enumerate(names)}
        else:
            columns = {name: [row[j] for row in data] for j, name in enumerate(names)}
        return Rows(n, columns, single=n == 1)
    if ndim == 1:
        values = data.tolist() if hasattr(data, "tolist") else list(data)
        _check_names(names, len(values))
        return Rows(1, {name: [v] for name, v in zip(names, values, strict=True)})
    raise TypeError(f"cannot read features from {type(data).__name__}")


def _check_names(names: list[str], width: int) -> None:
    if not names:
        raise ValueError("positional features need feature_names= (or feature_names_in_)")
    if len(names) != width:
        raise ValueError(f"{width} feature values per row for {len(names)} feature_names")


def read_outputs(
    result: Any, n: int, classes: Sequence[Any] | None = None, probabilities: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(outputs, metrics) of a call on ``n`` rows, as columns of ``n`` values.

    A number, string or 1-D array becomes ``prediction``; a mapping or
    DataFrame one output per key; a 2-D array of class probabilities (one row
    per input row, two or more columns) becomes ``label`` (the top class, named
    by ``classes`` when given) and the ``confidence`` metric (its probability),
    plus, with ``probabilities``, one output ``proba_<class>`` per class.
    """
    if isinstance(result, Mapping):
        return {str(k): _column(v, n) for k, v in result.items()}, {}
    if _is_frame(result):
        return {str(c): result[c] for c in result.columns}, {}
    if isinstance(result, Sequence) and result and all(isinstance(r, Mapping) for r in result):
        names = list(dict.fromkeys(str(k) for row in result for k in row))
        return {name: [row.get(name) for row in result] for name in names}, {}
    ndim = getattr(result, "ndim", None)
    if ndim is None and isinstance(result, Sequence) and not isinstance(result, (str, bytes)):
        ndim = 2 if result and all(isinstance(r, Sequence) and not isinstance(r, str)
                                   for r in result) else 1  # fmt: skip
    if ndim == 2:
        width = len(result[0]) if len(result) else 0
        if width == 1:
            return {PREDICTION_OUTPUT: [row[0] for row in _as_rows(result)]}, {}
        return _probabilities(result, classes, probabilities)
    return {PREDICTION_OUTPUT: _column(result, n)}, {}


def _column(values: Any, n: int) -> Any:
    """``values`` as a column of ``n`` values: a scalar is one row's value."""
    ndim = getattr(values, "ndim", None)
    if ndim == 0 or (ndim is None and not _is_sequence(values)):
        return [values]
    if len(values) != n:
        raise ValueError(f"{len(values)} output values for {n} rows")
    return values


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _as_rows(result: Any) -> list[list[Any]]:
    return result.tolist() if hasattr(result, "tolist") else [list(r) for r in result]


def _probabilities(
    result: Any, classes: Sequence[Any] | None, full: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = _as_rows(result)
    tops = [max(range(len(row)), key=row.__getitem__) for row in rows]
    names = list(classes) if classes is not None else None
    if names is not None and len(names) != len(rows[0]):
        raise ValueError(f"{len(names)} classes for {len(rows[0])} probability columns")
    labels = [names[i] if names is not None else i for i in tops]
    confidence = [row[i] for row, i in zip(rows, tops, strict=True)]
    outputs: dict[str, Any] = {LABEL_OUTPUT: labels}
    if full:
        for j in range(len(rows[0])):
            name = names[j] if names is not None else j
            outputs[f"proba_{name}"] = [row[j] for row in rows]
    return outputs, {CONFIDENCE_METRIC: confidence}
