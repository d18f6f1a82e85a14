"""StoreConnection: the collector's clients on its store, usable before the store is.

A collector whose store is unreachable at start (a server down, an embedded
store held for a while by another process) still starts: the receiver
acknowledges into the spool, which is what the spool is for, and ``/readyz``
says why the collector is degraded. Each component gets a client that opens
the store on first use (all clients at once, then ``setup``: migrations, store
settings); until that works, every use raises :class:`StoreUnreachableError`,
which the flusher treats as an outage (retry, never a dead letter) and the API
reports. A background thread keeps trying and calls ``on_connected`` once the
store is there, so flushing resumes at once rather than at its next backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, cast

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.store import StoreError, StoreLocation, open_client, redact_dsn

__all__ = ["StoreConnection", "StoreUnreachableError"]

_logger = logging.getLogger(__name__)


class StoreUnreachableError(StoreError, ConnectionError):
    """The store cannot be opened now; what was acknowledged waits in the spool."""


class StoreConnection:
    """``len(sessions)`` clients on one store, each with its own settings, opened together.

    ``setup`` runs once on the first client after they are open (it may raise:
    the clients are closed and the next use tries again). ``before_open`` runs
    before each try and may raise :class:`StoreError` to call the store
    unreachable without asking the engine (which prints its own refusal on
    stderr). Thread-safe.
    """

    def __init__(
        self,
        location: StoreLocation,
        sessions: list[dict[str, Any]],
        setup: Callable[[Client], None],
        on_connected: Callable[[], None] | None = None,
        before_open: Callable[[], None] | None = None,
    ) -> None:
        self._location = location
        self._before_open = before_open
        self._sessions = sessions
        self._setup = setup
        self._on_connected = on_connected
        self._lock = threading.Lock()
        self._opened: list[Client] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.problem: str | None = None  # why the store is not open, while it is not

    def connect(self) -> bool:
        """Open the store now; True if it is open. Keeps trying in the background if not."""
        try:
            self._ensure()
            return True
        except StoreUnreachableError as exc:
            _logger.warning(
                "the store %s is unreachable (%s): acknowledging into the spool, flushing once "
                "it is back",
                self._location.path or redact_dsn(self._location.dsn),
                exc,
            )
            self._thread = threading.Thread(target=self._retry, name="segwatch-store", daemon=True)
            self._thread.start()
            return False

    def client(self, index: int) -> Client:
        """The ``index``th session's client; it opens the store when first used."""
        return cast(Client, _LazyClient(self, index))

    def opened(self, index: int) -> Client:
        """The open client of session ``index`` (opening the store if needed)."""
        self._ensure()
        return self._opened[index]

    def _ensure(self) -> None:
        if self._opened:
            return
        with self._lock:
            if self._opened:
                return
            opened: list[Client] = []
            try:
                if self._before_open is not None:
                    self._before_open()
                for settings in self._sessions:
                    opened.append(open_client(self._location, **settings))
                self._setup(opened[0])
            except Exception as exc:
                for client in opened:
                    client.close()
                self.problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if isinstance(exc, StoreError):
                    raise StoreUnreachableError(self.problem) from exc
                raise
            self._opened = opened
            self.problem = None

    def _retry(self) -> None:
        delay = 0.5
        while not self._stopping.wait(delay):
            try:
                self._ensure()
            except StoreUnreachableError:
                delay = min(delay * 2, 5.0)
                continue
            except Exception:
                _logger.exception("setting up the store failed; trying again")
                delay = 5.0
                continue
            _logger.info("the store is reachable again")
            if self._on_connected is not None:
                self._on_connected()
            return

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for client in self._opened:
                client.close()
            self._opened = []


class _LazyClient:
    """Stands in for a clickhouse-connect client: every attribute comes from the real one,
    which is opened (with the others) on first use."""

    def __init__(self, connection: StoreConnection, index: int) -> None:
        self._connection = connection
        self._index = index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection.opened(self._index), name)
