"""Failpoints: named places where a test makes the collector crash or fail on cue.

A kill -9 at a random moment rarely lands in the window a test is about (an
insert landed, its spool range not yet marked flushed). Like etcd's gofail,
the collector names those places and ``SEGWATCH_FAILPOINTS`` arms them in a
collector *subprocess* started by a test::

    SEGWATCH_FAILPOINTS="exit-after-insert=2"       # _exit(137) after the 2nd flush landed
    SEGWATCH_FAILPOINTS="aggregate-error=poison"    # aggregating model 'poison' raises

Nothing is armed unless the variable is set; never set it in production. Read
once, when this module is imported.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

__all__ = ["FAILPOINTS_ENV", "aggregate_error", "exit_after_insert"]

FAILPOINTS_ENV = "SEGWATCH_FAILPOINTS"
"""Comma-separated ``name=value`` failpoints to arm (tests only)."""

_logger = logging.getLogger(__name__)


def _armed() -> dict[str, str]:
    text = os.environ.get(FAILPOINTS_ENV, "")
    points = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        points[name] = value
    if points:
        _logger.warning("failpoints armed (tests only): %s", ", ".join(sorted(points)))
    return points


_ARMED = _armed()
_inserts = 0
_lock = threading.Lock()


def exit_after_insert() -> None:
    """``exit-after-insert=N``: the process dies (exit 137, no cleanup) once the Nth flush
    has landed in the store, before the spool marks it flushed."""
    global _inserts
    value = _ARMED.get("exit-after-insert")
    if value is None:
        return
    with _lock:
        _inserts += 1
        if _inserts >= int(value or 1):
            os._exit(137)


def aggregate_error(models: Iterable[tuple[str, ...]]) -> None:
    """``aggregate-error=NAME``: aggregating a flush holding model NAME raises, as a bug would.

    ``models`` are the flush's model keys (name first); read only when armed."""
    name = _ARMED.get("aggregate-error")
    if name is not None and any(model[0] == name for model in models):
        raise RuntimeError(f"failpoint aggregate-error: model {name!r}")
