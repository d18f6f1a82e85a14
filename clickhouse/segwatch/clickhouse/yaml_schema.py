"""A small schema language for YAML documents, validated node by node.

Every problem is collected with its YAML path and line; unknown keys get the
nearest valid key as a hint. The result is plain Python data (dicts, lists,
scalars) that the caller turns into frozen dataclasses.

Two documents are written in it: the detector manifest
(:func:`segwatch.clickhouse.detection.load_manifest`) and the collector's config
(:mod:`segwatch.collector.config`). It lives in ``segwatch.clickhouse`` because
that is the one package both can import: the collector depends on
``segwatch.clickhouse``, never the other way round.

Thread contract: schemas are immutable and may be shared; a :class:`Problems`
belongs to one validation at a time.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "Choice",
    "ListOf",
    "MapOf",
    "Problems",
    "Record",
    "Scalar",
    "Schema",
    "at_least",
    "between",
    "listing",
    "matches",
    "one_of",
    "read",
    "validate",
]

Check = Callable[[Any], None]
"""Raises ``ValueError`` with a message when a value is impossible."""


@dataclass(frozen=True)
class Scalar:
    """One value of the given type(s) (an int is accepted where a float is), then ``check``."""

    kind: type | tuple[type, ...]
    check: Check | None = None


@dataclass(frozen=True)
class Record:
    """A mapping with fixed keys, each optional unless ``required``.

    Its value holds only the keys whose values passed: a required key may be
    absent from it (the problem is reported), so check before reading one.
    """

    fields: dict[str, Schema]
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class MapOf:
    """A mapping whose keys the user names (model names, feature names, parameters).

    A key with nothing under it (``country:``) stands for an empty mapping when
    the values are records: all their defaults.
    """

    value: Schema
    key_check: Check | None = None


@dataclass(frozen=True)
class ListOf:
    item: Schema
    min_len: int = 0
    max_len: int | None = None


@dataclass(frozen=True)
class Choice:
    """A mapping with exactly one key among ``options`` (e.g. ``{log: {base: 10}}``)."""

    options: dict[str, Schema]


Schema = Scalar | Record | MapOf | ListOf | Choice


@dataclass
class Problems:
    """Problems found so far, and the line of every path seen (for later checks)."""

    items: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)

    def add(self, path: str, line: int | None, message: str) -> None:
        where = f"{path or '(top level)'} (line {line})" if line else path or "(top level)"
        self.items.append(f"{where}: {message}")

    def at(self, path: str, message: str) -> None:
        """A problem found after parsing, at a path seen while parsing."""
        self.add(path, self.lines.get(path), message)


def listing(source: str, problems: Sequence[str]) -> str:
    """``source: N problem(s):`` and one ``  - problem`` line each: an error's message."""
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{source}: {len(problems)} problem(s):\n{lines}"


# -- checks shared by the documents ---------------------------------------------


def at_least(minimum: float, strictly: bool = False) -> Check:
    def check(value: float) -> None:
        if value < minimum or (strictly and value == minimum):
            raise ValueError(f"must be {'greater than' if strictly else 'at least'} {minimum}")

    return check


def between(low: float, high: float) -> Check:
    def check(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")

    return check


def one_of(*allowed: str) -> Check:
    def check(value: str) -> None:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, not {value!r}")

    return check


def matches(pattern: re.Pattern[str]) -> Check:
    def check(value: str) -> None:
        if not pattern.match(value):
            raise ValueError(f"{value!r} must match {pattern.pattern}")

    return check


# -- reading ------------------------------------------------------------------


def read(text: str, schema: Schema, problems: Problems) -> Any:
    """Parse YAML ``text`` and check it against ``schema``.

    Returns the document's value (``{}`` for an empty one, which lacks any
    required key of a :class:`Record`), or None when it cannot be used at all
    (not YAML, or the top level has the wrong shape); either way every
    problem found is in ``problems``.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        problems.items.append(f"not valid YAML: {exc}")
        return None
    if root is None:  # empty, or nothing but comments
        if isinstance(schema, Record) and schema.required:
            problems.add("", None, f"needs {', '.join(schema.required)}")
        return {}
    return validate(root, schema, "", problems)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def validate(node: yaml.Node | None, schema: Schema, path: str, problems: Problems) -> Any:
    """Check ``node`` against ``schema``; return its value, or None after adding problems."""
    if node is None:
        return None
    problems.lines[path] = _line(node)
    if isinstance(schema, Scalar):
        return _scalar(node, schema, path, problems)
    if isinstance(schema, ListOf):
        return _list(node, schema, path, problems)
    if not isinstance(node, yaml.MappingNode):
        problems.add(path, _line(node), "must be a mapping")
        return None
    if isinstance(schema, Record):
        return _record(node, schema, path, problems)
    if isinstance(schema, MapOf):
        return _map(node, schema, path, problems)
    return _choice(node, schema, path, problems)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _scalar(node: yaml.Node, schema: Scalar, path: str, problems: Problems) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        problems.add(path, _line(node), f"must be {_type_name(schema.kind)}")
        return None
    try:  # the node's own value, as yaml.safe_load would give it
        value = yaml.constructor.SafeConstructor().construct_object(node)
    except yaml.YAMLError as exc:  # an unknown tag, a malformed timestamp
        problems.add(path, _line(node), f"cannot be read: {exc}")
        return None
    kinds = schema.kind if isinstance(schema.kind, tuple) else (schema.kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    elif isinstance(value, int) and int not in kinds and float in kinds:
        value, ok = float(value), True
    else:
        ok = isinstance(value, kinds)
    if not ok:
        problems.add(path, _line(node), f"must be {_type_name(schema.kind)}, not {value!r}")
        return None
    if schema.check is not None:
        try:
            schema.check(value)
        except ValueError as exc:
            problems.add(path, _line(node), str(exc))
            return None
    return value


def _list(node: yaml.Node, schema: ListOf, path: str, problems: Problems) -> Any:
    if not isinstance(node, yaml.SequenceNode):
        problems.add(path, _line(node), "must be a list")
        return None
    if len(node.value) < schema.min_len:
        problems.add(path, _line(node), f"needs at least {schema.min_len} items")
        return None
    if schema.max_len is not None and len(node.value) > schema.max_len:
        problems.add(path, _line(node), f"takes at most {schema.max_len} items")
        return None
    values = [validate(item, schema.item, f"{path}[{i}]", problems)
              for i, item in enumerate(node.value)]  # fmt: skip
    return None if any(v is None for v in values) else values


def _record(node: yaml.MappingNode, schema: Record, path: str, problems: Problems) -> Any:
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        where = _join(path, key)
        if key not in schema.fields:
            hint = difflib.get_close_matches(key, list(schema.fields), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            known = ", ".join(sorted(schema.fields))
            problems.add(where, _line(key_node), f"unknown key{suggestion} (known: {known})")
            continue
        if key in out:
            problems.add(where, _line(key_node), "appears twice")
            continue
        value = validate(value_node, schema.fields[key], where, problems)
        if value is not None:
            out[key] = value
    present = {str(key_node.value) for key_node, _ in node.value}
    missing = [key for key in schema.required if key not in present]
    if missing:  # the rest is still checked: the caller skips a record without them
        problems.add(path, _line(node), f"needs {', '.join(missing)}")
    return out


def _map(node: yaml.MappingNode, schema: MapOf, path: str, problems: Problems) -> Any:
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        where = _join(path, key)
        if schema.key_check is not None:
            try:
                schema.key_check(key)
            except ValueError as exc:
                problems.add(where, _line(key_node), str(exc))
                continue
        if key in out:
            problems.add(where, _line(key_node), "appears twice")
            continue
        if isinstance(schema.value, Record) and value_node.tag == "tag:yaml.org,2002:null":
            out[key] = {}  # `country:` with nothing under it: all defaults
            problems.lines[where] = _line(key_node)
            continue
        value = validate(value_node, schema.value, where, problems)
        if value is not None:
            out[key] = value
    return out


def _choice(node: yaml.MappingNode, schema: Choice, path: str, problems: Problems) -> Any:
    options = ", ".join(sorted(schema.options))
    if len(node.value) != 1:
        problems.add(path, _line(node), f"takes exactly one of: {options}")
        return None
    key_node, value_node = node.value[0]
    key = str(key_node.value)
    if key not in schema.options:
        hint = difflib.get_close_matches(key, list(schema.options), n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        problems.add(_join(path, key), _line(key_node), f"unknown kind{suggestion} ({options})")
        return None
    value = validate(value_node, schema.options[key], _join(path, key), problems)
    return None if value is None else {key: value}
