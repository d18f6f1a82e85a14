"""ProblemLog: what a monitor could not record, counted and logged without flooding."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

__all__ = ["LOG_INTERVAL_SECONDS", "ProblemLog"]

# The monitor's logger, whichever module reports: services filter on this name.
_logger = logging.getLogger("segwatch.instrumentation.monitor")

LOG_INTERVAL_SECONDS = 60.0
"""The same kind of problem is logged at most once per this many seconds."""


class ProblemLog:
    """Counts one monitor's problems by kind; logs each kind at most once a minute.

    Called from whichever thread made the model call, so it takes a lock; it
    never raises (a model called 1,000 times a second must not flood the logs,
    and must never see the exception).
    """

    __slots__ = ("_last_logged", "_lock", "counts", "model")

    def __init__(self, model: str) -> None:
        self.model = model
        self.counts: Counter[str] = Counter()
        """How often each kind of problem happened (``features``, ``outputs``, ...)."""
        self._last_logged: dict[str, float] = {}
        self._lock = threading.Lock()

    def report(self, what: str, exc: BaseException) -> None:
        """Count a problem; log it unless its kind was logged this minute (with the count since)."""
        key = f"{what}:{type(exc).__name__}"
        now = time.monotonic()
        with self._lock:
            self.counts[what] += 1
            last = self._last_logged.get(key)
            if last is not None and now - last < LOG_INTERVAL_SECONDS:
                return
            self._last_logged[key] = now
            count = self.counts[what]
        _logger.warning(
            "segwatch: cannot record %s of model %r (%d so far): %s", what, self.model, count, exc
        )
