"""What each ``segwatch`` argument accepts: argparse type functions.

Each turns bad input into ``argparse.ArgumentTypeError`` naming what is wrong, so
argparse prints its usage line and exits 2 before any command runs.
"""

from __future__ import annotations

import argparse
import datetime as dt

from segwatch.clickhouse.detection import parse_duration
from segwatch.clickhouse.store import validate_identifier

__all__ = ["cluster_name", "duration", "moment", "positive_int", "stage", "timestamp"]


def cluster_name(text: str) -> str:
    try:
        return validate_identifier(text, "cluster name")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 10000")
    return value


def moment(text: str) -> dt.datetime:
    """An ISO 8601 time, ``now``, or ``-DURATION`` before now (``-2h``, as --since reads)."""
    if text.strip() == "now":
        return dt.datetime.now(dt.timezone.utc)
    if text.strip().startswith("-"):
        seconds = duration(text.strip()[1:])
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
    return timestamp(text)


def stage(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a stage is a non-empty name, e.g. serving or shadow")
    return text


def timestamp(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
