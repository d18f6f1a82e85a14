"""Claims and leases kept in the store itself: one winner among processes, no Keeper.

Several collectors (and ``segwatch migrate`` runs) share one ClickHouse store,
embedded behind ``segwatch serve`` or a server, and some work must be done by
exactly one of them: a detector's window, a migration run. ClickHouse has no
transactions and no locks, but it has *insert deduplication*: an insert that
carries ``insert_deduplication_token`` equal to one an earlier insert into the
same table carried (within the table's ``non_replicated_deduplication_window``
most recent inserts) adds no row. Of several processes inserting the same
key, exactly one row lands, the others' inserts are dropped, and reading the
key back names the one winner. The table is checked and written under one
lock inside the engine, so this holds however the inserts interleave, on the
embedded engine (whose inserts clickhouse-connect sends as ``INSERT ... FROM
INFILE``) as on a server over HTTP. Deduplication compares the token only, not
the rows: each claimant's row names itself.

- :func:`claim_once`: True for exactly one holder per key, ever (within the
  window, which is far longer than any two claimants of one key are apart).
- :class:`Lease`: a named lease with a timeout, for the migration runner.
  A lease is a sequence of *generations*: generation ``g + 1`` may be claimed
  only when generation ``g`` is released or has expired (its holder may claim
  it before that to renew). Releasing claims the next generation as already
  expired, so if another process took the lease over after it expired, the
  late release changes nothing. Expiry is read on the store's clock
  (``now64()``), never compared across the hosts' clocks.

Rows live in ``segwatch_leases``, made here with ``CREATE TABLE IF NOT EXISTS``
when an insert finds no table (like the migrations' tracking table: the
migration runner needs it before any migration has run). The statement is
migration ``0012_leases.sql``'s, read from that file; the migration gives the
table to stores migrated before it existed, whose collectors may not create
tables. One-time claims are deleted after 90 days (their windows are long
past); lease generations are few and kept. Deleting rows
does not forget their tokens: a key claimed again after its row is gone finds
no row, and that claim counts as lost. On a cluster the table is a local
``MergeTree`` on the node the DSN reaches: every claimant must reach the same
node (a ``Replicated`` table would deduplicate through Keeper instead).

Thread-safety: each function uses the client it is given; a client must not
be shared by threads while a call runs (use one client per thread). A
:class:`Lease` is used by one thread, except that :meth:`Lease.kept` renews it
from a thread of its own (with a client of its own) while that thread works.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from clickhouse_connect.driver.client import Client

from .sql_text import split_statements
from .store import StoreError, error_code

__all__ = [
    "LEASE_TABLE",
    "Lease",
    "LeaseHeldError",
    "LeaseLostError",
    "LeaseState",
    "claim_once",
    "ensure_lease_table",
    "holder_name",
]

LEASE_TABLE = "segwatch_leases"
_UNKNOWN_TABLE = 60  # ClickHouse's UNKNOWN_TABLE
_logger = logging.getLogger(__name__)

_LEASE_TABLE_MIGRATION = "0012_leases.sql"
"""The migration that creates the table: its one statement is what this module runs."""

_COLUMNS = ["key", "lease", "generation", "holder", "lease_ms"]
_TYPES = ["String", "String", "UInt64", "String", "UInt64"]


def holder_name(role: str = "") -> str:
    """Who is claiming, for people and for the table: ``host pid N role #tag``.

    The random tag tells apart claimants in one process (two schedulers, two
    threads): two claimants must never share a holder name.
    """
    parts = [socket.gethostname(), f"pid {os.getpid()}", role, f"#{uuid.uuid4().hex[:8]}"]
    return " ".join(part for part in parts if part)


def ensure_lease_table(client: Client) -> None:
    """Create ``segwatch_leases`` if the store has none (idempotent), as migration
    ``0012_leases.sql`` does."""
    client.command(_create_lease_table_sql())


@functools.cache
def _create_lease_table_sql() -> str:
    migrations = resources.files("segwatch.clickhouse.migrations")
    (statement,) = split_statements(migrations.joinpath(_LEASE_TABLE_MIGRATION).read_text("utf-8"))
    return statement


def claim_once(client: Client, key: str, holder: str) -> bool:
    """Claim ``key`` for ``holder``: True for exactly one holder per key, ever.

    Every claimant of a key must pass a different ``holder`` (see
    :func:`holder_name`). Blocks for one insert and one read; raises what the
    client raises when the store cannot be reached (the claim is then unknown:
    the caller must not do the work).
    """
    stored_key = f"claim:{key}"
    _insert(client, [stored_key, "", 0, holder, 0])
    return _winner(client, stored_key) == holder


@dataclass(frozen=True)
class LeaseState:
    """The newest generation of a lease, as the store saw it when it was read."""

    name: str
    generation: int
    holder: str
    expires_at: dt.datetime
    released: bool
    """Its holder released it (the generation was claimed as already expired)."""
    lapsed: bool
    """It has expired (released ones included): the next generation is free to claim."""

    def describe(self) -> str:
        when = self.expires_at.isoformat(timespec="seconds")
        if self.released:
            return f"released by {self.holder}"
        return f"held by {self.holder} until {when}" + (" (expired)" if self.lapsed else "")


class LeaseHeldError(StoreError):
    """Another holder has the lease and did not release it in time."""

    def __init__(self, state: LeaseState) -> None:
        super().__init__(
            f"the {state.name!r} lease is held by {state.holder}; it expires at "
            f"{state.expires_at.isoformat(timespec='seconds')} unless renewed"
        )
        self.state = state


class LeaseLostError(StoreError):
    """The holder's lease expired and another holder took it over."""


class Lease:
    """A named lease, held by one holder at a time until released or expired.

    ``seconds`` is how long each generation lasts; the holder renews it with
    :meth:`renew` before then (or has :meth:`kept` renew it), or loses it to
    the next claimant. Used as a context manager it is acquired (waiting
    ``wait`` seconds at most) and released. One client, one thread, but for
    the renewing thread of :meth:`kept`; claims are made under a lock, so that
    thread and the holder's never claim at once.
    """

    def __init__(
        self,
        client: Client,
        name: str,
        holder: str | None = None,
        *,
        seconds: float = 600.0,
        wait: float = 0.0,
        poll: float = 0.5,
    ) -> None:
        if seconds <= 0:
            raise ValueError(f"a lease lasts a positive time, not {seconds} s")
        self.client = client
        self.name = name
        self.holder = holder or holder_name()
        self.seconds = seconds
        self.wait = wait
        self.poll = poll
        self.generation: int | None = None  # the generation held, while held
        self._claimed = 0.0  # time.monotonic() of the last generation claimed
        self._claiming = threading.Lock()  # one claim at a time: holder and renewing thread
        self._lost: LeaseLostError | None = None  # what the renewing thread found

    def state(self, client: Client | None = None) -> LeaseState | None:
        """The lease's newest generation (read with ``client``, default the lease's own);
        None if it was never claimed."""
        rows = _query_missing_table_as_empty(
            client or self.client,
            "SELECT generation, holder, "
            "toUnixTimestamp64Milli(claimed_at + toIntervalMillisecond(lease_ms)) AS expires, "
            "lease_ms = 0, expires <= toUnixTimestamp64Milli(now64(3)) "
            f"FROM {LEASE_TABLE} WHERE lease = {{name:String}} "
            "ORDER BY generation DESC, claimed_at, holder LIMIT 1",
            {"name": self.name},
        )
        if not rows:
            return None
        generation, holder, expires_ms, released, lapsed = rows[0]
        expires = dt.datetime.fromtimestamp(expires_ms / 1000, dt.timezone.utc)
        return LeaseState(
            self.name, int(generation), str(holder), expires, bool(released), bool(lapsed)
        )

    def try_acquire(self) -> bool:
        """Take the lease if it is free (never claimed, released or expired); True if taken.

        True also when this holder has it already (and renews it).
        """
        state = self.state()
        if state is not None and not state.lapsed and state.holder != self.holder:
            return False
        with self._claiming:
            if self._claim_next(0 if state is None else state.generation, self.client):
                self._lost = None
                return True
            return False

    def acquire(self, wait: float | None = None) -> None:
        """Take the lease, polling up to ``wait`` seconds (default: the constructor's).

        Raises :class:`LeaseHeldError` naming the holder and when its
        generation expires if the lease is still held then.
        """
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                state = self.state()
                if state is not None and not state.lapsed:
                    raise LeaseHeldError(state)
                # Free, yet its next generation is taken: rows deleted by hand, or a
                # race lost just now; either way, not ours.
                raise StoreError(f"could not take the {self.name!r} lease; try again")
            time.sleep(self.poll)

    def renew(self, client: Client | None = None) -> None:
        """Extend the lease by claiming the next generation; :class:`LeaseLostError` if
        another holder took it over after it expired.

        ``client``: the one to claim with (default: the lease's own).
        """
        with self._claiming:
            if self.generation is None:
                raise LeaseLostError(f"{self.holder} does not hold the {self.name!r} lease")
            if self._claim_next(self.generation, client or self.client):
                return
            self.generation = None
        state = self.state(client)
        raise LeaseLostError(
            f"the {self.name!r} lease of {self.holder} expired and was taken over"
            + (f": {state.describe()}" if state else "")
        )

    def keep(self) -> None:
        """Renew if a third of the lease's time has passed since the last claim.

        Cheap enough to call between any two steps of long work; a step longer
        than ``seconds`` can still lose the lease (:meth:`renew` then says so);
        :meth:`kept` renews during a step.
        """
        if time.monotonic() - self._claimed >= self.seconds / 3:
            self.renew()

    def confirm(self) -> None:
        """Make sure this holder still holds the lease, right before a step that only
        the holder may take: renew it now, or raise :class:`LeaseLostError` if another
        holder took it over (noticed now or by :meth:`kept`'s thread)."""
        if self._lost is not None:
            raise LeaseLostError(str(self._lost))
        self.renew()

    @contextmanager
    def kept(self, client: Client) -> Iterator[None]:
        """Keep the held lease renewed while the block runs, from a thread of its own.

        The thread renews a third of the lease's time after each claim, with
        ``client``, which no other thread may use meanwhile (a server client
        without a session may be shared: its requests run side by side). A
        renewal that fails for want of the store is tried again; a lease taken
        over ends the thread, and the holder's next :meth:`confirm` raises.
        Leaving the block stops the thread (the lease stays held).
        """
        stop = threading.Event()
        thread = threading.Thread(target=self._keep_renewed, args=(client, stop),
                                  name=f"segwatch-lease-{self.name}", daemon=True)  # fmt: skip
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _keep_renewed(self, client: Client, stop: threading.Event) -> None:
        retry = self.seconds / 30  # after a failed renewal: often, yet without hammering
        while not stop.wait(max(retry, self._claimed + self.seconds / 3 - time.monotonic())):
            try:
                self.renew(client)
            except LeaseLostError as exc:
                self._lost = exc
                _logger.error("%s", exc)
                return
            except Exception:
                _logger.warning("renewing the %r lease failed; trying again", self.name,
                                exc_info=True)  # fmt: skip

    def release(self) -> None:
        """Give the lease up now: its next generation, claimed as already expired.

        If another holder took the lease over after it expired, this changes nothing.
        """
        with self._claiming:
            if self.generation is None:
                return
            generation, self.generation = self.generation + 1, None
        _insert(self.client, [_lease_key(self.name, generation), self.name, generation,
                              self.holder, 0])  # fmt: skip

    def _claim_next(self, generation: int, client: Client) -> bool:
        """Claim generation ``generation + 1`` with ``client``; True if this holder got it.

        The caller holds ``self._claiming``.
        """
        key = _lease_key(self.name, generation + 1)
        lease_ms = max(1, round(self.seconds * 1000))
        claimed = time.monotonic()  # before the insert, so keep() errs towards renewing early
        _insert(client, [key, self.name, generation + 1, self.holder, lease_ms])
        if _winner(client, key) != self.holder:
            return False
        self.generation, self._claimed = generation + 1, claimed
        return True

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _lease_key(name: str, generation: int) -> str:
    return f"lease:{name}:{generation}"


def _insert(client: Client, row: list[object]) -> None:
    """Insert one row under the deduplication token of its key (``row[0]``).

    ``async_insert`` is off for it: asynchronous inserts deduplicate otherwise
    (and later). The table is made on the first insert that finds none.
    """
    settings = {"insert_deduplication_token": row[0], "insert_deduplicate": 1, "async_insert": 0}
    for attempt in (1, 2):
        try:
            client.insert(LEASE_TABLE, [row], column_names=_COLUMNS, column_type_names=_TYPES,
                          settings=settings)  # fmt: skip
            return
        except Exception as exc:
            if attempt == 2 or error_code(exc) != _UNKNOWN_TABLE:
                raise
            ensure_lease_table(client)


def _winner(client: Client, key: str) -> str | None:
    """The holder of ``key``'s row; None when its row is gone (claimed long ago)."""
    # Several rows only if a key was claimed again after its token left the
    # deduplication window; the first claimant still wins.
    rows = client.query(
        f"SELECT holder FROM {LEASE_TABLE} WHERE key = {{key:String}} "
        "ORDER BY claimed_at, holder LIMIT 1",
        parameters={"key": key},
    ).result_rows
    return str(rows[0][0]) if rows else None


def _query_missing_table_as_empty(
    client: Client, query: str, parameters: dict[str, object]
) -> list[tuple[Any, ...]]:
    try:
        return [tuple(row) for row in client.query(query, parameters=parameters).result_rows]
    except Exception as exc:
        if error_code(exc) == _UNKNOWN_TABLE:
            return []
        raise
