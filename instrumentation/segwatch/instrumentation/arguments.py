"""Where a decorated model function's input, names and classes come from."""

from __future__ import annotations

from typing import Any

from .values import AttributeScalar, to_attribute_value

__all__ = ["first_values", "looks_like_self", "names_of", "plain_list", "split_arguments"]


def split_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """(the method's owner or None, the model's input): the first argument after ``self``."""
    owner = args[0] if args and looks_like_self(args[0]) else None
    candidates = args[1:] if owner is not None else args
    if candidates:
        return owner, candidates[0]
    return owner, next(iter(kwargs.values()), None)


def looks_like_self(obj: Any) -> bool:
    # A bound method's owner: an object of a user class with the method on it.
    # Inputs (dicts, arrays, frames, lists) come from builtins or numpy/pandas.
    module = type(obj).__module__
    return not (
        module == "builtins"
        or module.startswith(("numpy", "pandas"))
        or isinstance(obj, (dict, list, tuple))
    )


def names_of(owner: Any) -> list[str] | None:
    """Feature names a fitted estimator knows (scikit-learn's ``feature_names_in_``)."""
    names = getattr(owner, "feature_names_in_", None)
    return [str(n) for n in plain_list(names)] if names is not None else None


def plain_list(values: Any) -> list[Any]:
    tolist = getattr(values, "tolist", None)
    return list(tolist()) if callable(tolist) else list(values)


def first_values(columns: dict[str, Any]) -> dict[str, AttributeScalar | None]:
    out: dict[str, AttributeScalar | None] = {}
    for name, values in columns.items():
        first = values.iloc[0] if hasattr(values, "iloc") else values[0]
        out[name] = to_attribute_value(first)
    return out
