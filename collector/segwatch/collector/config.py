"""The collector's YAML configuration: frozen dataclasses and one validation pass.

Validation collects *every* problem, each with its YAML path and line, and
raises one :class:`ConfigError` listing them all; startup refuses bad config.
Every key has a default, so an empty file (or no file) is a valid config.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from segwatch.clickhouse.store import DEFAULT_DSN, parse_dsn

__all__ = [
    "ApiConfig",
    "CollectorConfig",
    "ConfigError",
    "ReceiverConfig",
    "StorageConfig",
    "load_config",
    "parse_config",
    "parse_endpoint",
]

DEFAULT_GRPC_ENDPOINT = "127.0.0.1:4317"
DEFAULT_API_ENDPOINT = "127.0.0.1:4320"


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` lists each one as ``path (line N): message``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{listing}")


@dataclass(frozen=True)
class StorageConfig:
    dsn: str = DEFAULT_DSN
    raw_calls: bool = True


@dataclass(frozen=True)
class ReceiverConfig:
    endpoint: str = DEFAULT_GRPC_ENDPOINT
    max_workers: int = 8


@dataclass(frozen=True)
class ApiConfig:
    endpoint: str = DEFAULT_API_ENDPOINT


@dataclass(frozen=True)
class SegmentsConfig:
    top_k: int = 20


@dataclass(frozen=True)
class SchedulerConfig:
    enabled: bool = True


@dataclass(frozen=True)
class CollectorConfig:
    storage: StorageConfig = field(default_factory=StorageConfig)
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) → (host, port); ``ValueError`` if malformed."""
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"endpoint {endpoint!r} must be host:port with a port 0-65535")
    return host.strip("[]"), int(port_text)


# The schema: section → key → (type, validator or None). Types are checked first.
_SCHEMA: dict[str, dict[str, tuple[type, Any]]] = {
    "storage": {"dsn": (str, parse_dsn), "raw_calls": (bool, None)},
    "receiver": {"grpc": (dict, None)},
    "api": {"endpoint": (str, parse_endpoint)},
    "segments": {"top_k": (int, lambda v: _check(v >= 1, "must be at least 1"))},
    "scheduler": {"enabled": (bool, None)},
}
_GRPC_SCHEMA: dict[str, tuple[type, Any]] = {
    "endpoint": (str, parse_endpoint),
    "max_workers": (int, lambda v: _check(1 <= v <= 256, "must be between 1 and 256")),
}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def load_config(path: str | None) -> CollectorConfig:
    """Read and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return CollectorConfig()
    if not os.path.isfile(path):
        raise ConfigError(path, ["file not found"])
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return parse_config(text, source=path)


def parse_config(text: str, source: str = "<config>") -> CollectorConfig:
    """Validate YAML text; raise :class:`ConfigError` listing every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    if root is None:
        return CollectorConfig()
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(source, [f"(line {_line(root)}): the top level must be a mapping"])
    for section, node in _mapping_items(root, "", _SCHEMA, problems):
        values[section] = {}
        if not isinstance(node, yaml.MappingNode):
            problems.append(f"{section} (line {_line(node)}): must be a mapping")
            continue
        for key, value_node in _mapping_items(node, section, _SCHEMA[section], problems):
            path = f"{section}.{key}"
            value = _typed_value(value_node, _SCHEMA[section][key], path, problems)
            if value is None:
                continue
            if key == "grpc":
                values[section].update(_grpc(value_node, path, problems))
            else:
                values[section][key] = value
    if problems:
        raise ConfigError(source, problems)
    return CollectorConfig(
        storage=StorageConfig(**values.get("storage", {})),
        receiver=ReceiverConfig(**values.get("receiver", {})),
        api=ApiConfig(**values.get("api", {})),
        segments=SegmentsConfig(**values.get("segments", {})),
        scheduler=SchedulerConfig(**values.get("scheduler", {})),
    )


def _grpc(node: yaml.Node, path: str, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value_node in _mapping_items(node, path, _GRPC_SCHEMA, problems):
        value = _typed_value(value_node, _GRPC_SCHEMA[key], f"{path}.{key}", problems)
        if value is not None:
            out[key] = value
    return out


def _mapping_items(
    node: yaml.Node, path: str, allowed: dict[str, Any], problems: list[str]
) -> list[tuple[str, yaml.Node]]:
    items: list[tuple[str, yaml.Node]] = []
    for key_node, value_node in node.value:
        key = key_node.value
        where = f"{path}.{key}" if path else key
        if key not in allowed:
            hint = difflib.get_close_matches(key, list(allowed), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            known = ", ".join(sorted(allowed))
            problems.append(
                f"{where} (line {_line(key_node)}): unknown key{suggestion} (known: {known})"
            )
            continue
        items.append((key, value_node))
    return items


def _typed_value(node: yaml.Node, spec: tuple[type, Any], path: str, problems: list[str]) -> Any:
    expected, validator = spec
    if expected is dict:
        if not isinstance(node, yaml.MappingNode):
            problems.append(f"{path} (line {_line(node)}): must be a mapping")
            return None
        return node
    if not isinstance(node, yaml.ScalarNode):
        problems.append(f"{path} (line {_line(node)}): must be a {expected.__name__}")
        return None
    value = yaml.safe_load(yaml.serialize(node))
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        problems.append(f"{path} (line {_line(node)}): must be an integer, not {value!r}")
        return None
    if expected is not int and not isinstance(value, expected):
        problems.append(
            f"{path} (line {_line(node)}): must be a {expected.__name__}, not {value!r}"
        )
        return None
    if validator is not None:
        try:
            validator(value)
        except ValueError as exc:
            problems.append(f"{path} (line {_line(node)}): {exc}")
            return None
    return value


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1
