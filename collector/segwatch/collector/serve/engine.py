"""Engine: the embedded store's engine, as handles the door runs requests on.

A chdb connection handle is an engine session of its own: its settings, its
``USE`` and its temporary tables are its alone, while every handle of the
process shares the one engine and its data (so the collector's own clients
and the door's see the same store). Opening one costs well under a
millisecond, so a request without ``session_id`` gets a fresh handle and
drops it after; a ClickHouse session (``session_id``) keeps its handle
between requests (:class:`Sessions`).

Each handle is tagged at birth (``log_comment``), under the user's budget and,
for a reader, ``readonly=1``, which nothing after it can lift. A query whose
client goes away is found by that tag and killed from a control handle.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import chdb

from segwatch.collector.cancellable import CancellableRun

from .errors import ServeError, engine_error
from .users import Account

__all__ = ["MAX_SESSIONS", "Engine", "EngineHandle", "Outcome", "Sessions"]

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_POLL = 0.1  # seconds between looks at whether the client is still there


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def setting_name(name: str) -> str:
    """``name`` if it can be a setting's name, else the engine's refusal for unknown ones."""
    if not _SETTING_NAME.match(name):
        raise ServeError("UNKNOWN_SETTING", f"Unknown setting '{name}'")
    return name


@dataclass(frozen=True)
class Outcome:
    """What a query gave: its output bytes and the engine's statistics for the summary."""

    data: bytes
    rows_read: int = 0
    bytes_read: int = 0
    rows_written: int = 0
    bytes_written: int = 0
    elapsed_ns: int = 0


class EngineHandle:
    """One engine session: a chdb connection and its lock (one query at a time)."""

    def __init__(self, connection: Any, tag: str, user: str = "default") -> None:
        self._connection = connection
        self.tag = tag
        self.user = user  # the account the errors name (the engine's own session is "default")
        # What KILL QUERY finds its query by: the tag, unless the client set a log_comment
        # of its own (a collector's analyst sessions do, to cancel their queries themselves).
        self.comment = tag
        self.lock = threading.Lock()

    def run(
        self, sql: str, output_format: str = "TabSeparated", params: dict[str, str] | None = None
    ) -> Any:
        try:
            return self._connection.query(sql, output_format, params=params or {})
        except Exception as exc:
            raise engine_error(exc, self.user) from exc

    def set(self, name: str, value: str) -> None:
        self.run(f"SET {setting_name(name)} = {_quote(value)}")
        if name == "log_comment":
            self.comment = value

    def use(self, database: str) -> None:
        """``USE database`` (every time: a session's own ``USE`` may have moved it)."""
        if database:
            self.run(f"USE `{database.replace('`', '``')}`")

    def snapshot(self, names: list[str]) -> dict[str, tuple[str, bool]]:
        """The current value of each setting, and whether it was changed from its default."""
        listed = ", ".join(_quote(setting_name(name)) for name in names)
        result = self.run(
            f"SELECT name, value, changed FROM system.settings WHERE name IN ({listed})",
            "TabSeparatedRaw",
        )
        found: dict[str, tuple[str, bool]] = {}
        for line in result.bytes().decode().splitlines():
            name, value, changed = line.split("\t")
            found[name] = (value, changed == "1")
        return found

    def restore(self, snapshot: dict[str, tuple[str, bool]], names: list[str]) -> None:
        for name in names:
            value, changed = snapshot.get(name, ("", False))
            if changed:
                self.set(name, value)
            else:
                self.run(f"SET {setting_name(name)} = DEFAULT")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._connection.close()


class Engine:
    """The store's engine: opens handles for accounts, runs queries, kills abandoned ones.

    ``path`` is the store's directory (None: in memory). Thread-safe.
    """

    def __init__(self, path: str | None) -> None:
        self._target = os.path.realpath(path) if path is not None else ":memory:"
        self._process_tag = f"segwatch-serve-{os.getpid()}-{secrets.token_hex(4)}"
        self._control = chdb.connect(self._target)  # type: ignore[no-untyped-call]
        self._control_lock = threading.Lock()
        row = self._control.query("SELECT version(), timezone()", "TabSeparated").bytes()
        self.version, self.timezone = row.decode().strip().split("\t")

    def known_names(self) -> list[str]:
        """The names of the engine's table functions, table and database engines and
        dictionary sources (what :mod:`.guard` sorts into the store's and the rest)."""
        with self._control_lock:
            result = self._control.query(
                "SELECT name FROM system.table_functions UNION ALL "
                "SELECT name FROM system.table_engines UNION ALL "
                "SELECT name FROM system.database_engines UNION ALL "
                "SELECT name FROM system.dictionary_sources",
                "TabSeparatedRaw",
            )
        return [str(name) for name in result.bytes().decode().split()]

    def open(self, account: Account) -> EngineHandle:
        """A new engine session for ``account``: tagged, on its budget, readonly for readers."""
        try:
            connection = chdb.connect(self._target)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise engine_error(exc) from exc
        handle = EngineHandle(
            connection, f"{self._process_tag}-{secrets.token_hex(6)}", account.name
        )
        try:
            for name, value in account.budget().items():
                handle.set(name, value)
            handle.set("log_comment", handle.tag)
            if account.user.readonly:
                handle.set("readonly", "1")  # last: from here on nothing can change it
        except BaseException:
            handle.close()
            raise
        return handle

    def execute(
        self,
        handle: EngineHandle,
        sql: str,
        output_format: str,
        params: dict[str, str],
        abandoned: Callable[[], bool],
    ) -> Outcome:
        """Run ``sql`` on ``handle`` (its lock held by the caller), killing it if the client
        goes away (``abandoned`` turns true) before it ends."""
        run = CancellableRun(abandoned, lambda: self.kill(handle.comment), _POLL)
        result = run.run(lambda: handle.run(sql, output_format, params), "segwatch-serve-query")
        return Outcome(
            data=result.bytes() or b"",
            rows_read=int(result.rows_read()),
            bytes_read=int(result.bytes_read()),
            rows_written=int(result.rows_written()),
            bytes_written=int(result.bytes_written()),
            elapsed_ns=int(result.elapsed() * 1e9),
        )

    def kill(self, tag: str) -> None:
        """Cancel the query running under ``tag`` (the handle's ``log_comment``)."""
        with self._control_lock, contextlib.suppress(Exception):
            self._control.query(
                "KILL QUERY WHERE Settings['log_comment'] = {tag:String} ASYNC",
                "TabSeparated",
                params={"tag": tag},
            )

    def kill_all(self) -> None:
        """Cancel every query the door runs (it is stopping)."""
        with self._control_lock, contextlib.suppress(Exception):
            self._control.query(
                "KILL QUERY WHERE Settings['log_comment'] LIKE {pattern:String} ASYNC",
                "TabSeparated",
                params={"pattern": self._process_tag + "-%"},
            )

    def close(self) -> None:
        with self._control_lock, contextlib.suppress(Exception):
            self._control.close()


@dataclass
class _Session:
    handle: EngineHandle
    timeout: float
    last_used: float


MAX_SESSIONS = 1000
"""Sessions open at once (each holds an engine handle), across users."""


class Sessions:
    """ClickHouse sessions (``session_id``): one engine handle each, kept between requests,
    dropped once idle past their timeout. A session is one user's: the same id under
    another user is another session. One request at a time per session: a second one
    while the first runs is refused (``SESSION_IS_LOCKED``), as ClickHouse does."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(
        self, account: Account, session_id: str, timeout: float | None, check: bool
    ) -> Iterator[EngineHandle]:
        """The session's handle, locked for this request."""
        self.sweep()
        key = (account.name, session_id)
        with self._lock:  # the handle is locked before sweep() could see it idle and close it
            session = self._sessions.get(key)
            if session is None:
                if check:
                    raise ServeError("SESSION_NOT_FOUND", f"Session {session_id} not found")
                if len(self._sessions) >= MAX_SESSIONS:
                    raise ServeError(
                        "TOO_MANY_SIMULTANEOUS_QUERIES",
                        f"{MAX_SESSIONS} sessions are open: end one, or wait for one to expire",
                    )
                session = _Session(self._engine.open(account), timeout or 60.0, self._clock())
                self._sessions[key] = session
            elif timeout is not None:
                session.timeout = timeout
            if not session.handle.lock.acquire(blocking=False):
                raise ServeError(
                    "SESSION_IS_LOCKED", f"Session {session_id} is locked by a concurrent client"
                )
        try:
            yield session.handle
        finally:
            session.last_used = self._clock()
            session.handle.lock.release()

    def sweep(self) -> None:
        """Close the sessions idle past their timeout."""
        now = self._clock()
        with self._lock:
            expired = [
                key
                for key, session in self._sessions.items()
                if now - session.last_used > session.timeout and not session.handle.lock.locked()
            ]
            closing = [self._sessions.pop(key) for key in expired]
        for session in closing:
            session.handle.close()

    def close(self) -> None:
        with self._lock:
            closing, self._sessions = list(self._sessions.values()), {}
        for session in closing:
            session.handle.close()
