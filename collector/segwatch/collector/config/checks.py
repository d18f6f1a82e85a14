"""Checks of single config values (names, durations, files, URLs), for the schema.

Each raises ``ValueError`` with the message the config's error lists; the
generic ones (ranges, choices) are in :mod:`segwatch.clickhouse.yaml_schema`.
"""

from __future__ import annotations

import itertools
import os
import re

from segwatch.clickhouse.detection import check_detector_duration, parse_duration
from segwatch.clickhouse.store import parse_dsn

from .endpoints import parse_endpoint

__all__ = [
    "detector_duration",
    "dsn",
    "duration",
    "endpoint",
    "env_name",
    "field_name",
    "identifier",
    "increasing",
    "readable_file",
    "url",
]

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


def field_name(name: str) -> None:
    """A model, field, label or baseline name."""
    if not _FIELD_NAME.match(name):
        raise ValueError(
            f"name {name!r} must be letters, digits, _, . or - (and not start with one)"
        )


def duration(text: str) -> None:
    parse_duration(text)


def detector_duration(text: str) -> None:
    """A duration the detectors can read from 5-minute roll-ups."""
    check_detector_duration(parse_duration(text))


def identifier(name: str) -> None:
    """A detector parameter's name (it becomes a query parameter)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        raise ValueError(f"{name!r} must be letters, digits and _ (and not start with a digit)")


def readable_file(path: str) -> None:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError(f"{path!r} is not a readable file")


def env_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
        raise ValueError(f"{name!r} is not an environment variable name")


def url(text: str) -> None:
    if not re.match(r"^https?://[^\s/]+", text):
        raise ValueError(f"{text!r} must be an http(s):// URL")


def increasing(values: list[float]) -> None:
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError("edges must be strictly increasing")


def endpoint(text: str) -> None:
    """``host:port``."""
    parse_endpoint(text)


def dsn(text: str) -> None:
    """A store's DSN (``chdb://DIR``, ``http(s)://...``)."""
    parse_dsn(text)
