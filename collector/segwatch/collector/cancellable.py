"""CancellableRun: a blocking call on a worker thread, cancelled once its caller says so.

The engine's calls block until the query ends, and cannot be interrupted from
the calling thread; what can stop them is a ``KILL QUERY`` from elsewhere. So
the call runs on a worker thread, and the caller's thread asks, every ``poll``
seconds while it runs, whether it should be cancelled (its client hung up, the
process is stopping): the first time it should, ``cancel`` runs, once. The
local API's analyst queries and ``segwatch serve``'s queries both run so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

__all__ = ["CancellableRun"]

T = TypeVar("T")


class CancellableRun:
    """One call's run; :attr:`cancelled` says whether ``cancel`` was called."""

    def __init__(
        self, should_cancel: Callable[[], bool], cancel: Callable[[], None], poll: float
    ) -> None:
        self._should_cancel = should_cancel
        self._cancel = cancel
        self._poll = poll
        self.cancelled = False

    def run(self, work: Callable[[], T], name: str = "segwatch-query") -> T:
        """``work()``'s result, or its exception, once it has ended (cancelled or not)."""
        done: Future[T] = Future()

        def on_worker() -> None:
            try:
                done.set_result(work())
            except BaseException as exc:
                done.set_exception(exc)

        threading.Thread(target=on_worker, name=name, daemon=True).start()
        while True:
            try:
                return done.result(timeout=self._poll)
            except TimeoutError:
                if not self.cancelled and self._should_cancel():
                    self.cancelled = True
                    self._cancel()
