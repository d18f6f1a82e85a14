"""Applying the numbered ``.sql`` migrations, once each, in order, by one runner at a time.

Migration files are named ``NNNN_description.sql`` and are never edited once
shipped: a changed file is refused (its checksum no longer matches what the
tracking table recorded). Each applied migration is recorded in
``segwatch_migrations``; running again applies only what is new.

One runner at a time: on a store others may reach (a server, or an embedded
store behind ``segwatch serve``), :func:`apply_migrations` holds the
``migrations`` lease (:mod:`.lease`, kept in the store itself) while it runs,
so runners racing on one store (``segwatch migrate`` in every replica's
start-up, two operators) apply each migration once; the others wait for the
lease, then find nothing left to do. A thread renews the lease while a
statement runs (a copy of a big table can outlast any fixed lease), and the
runner checks that the lease is still its own right before each ``EXCHANGE``
and before recording a migration: a runner that lost it stops with
:class:`MigrationError` instead of publishing or recording work another runner
is redoing. An exclusive store (embedded, locked by the one process that
opened it) takes no lease: the engine's lock already keeps every other process
out, and a lease left behind by a crashed run would only block the next start.
An embedded store is migrated by the process that opens it (the collector at
start); collectors on a server do not migrate but call
:func:`require_migrated`, and ``segwatch migrate`` brings the server's store
up to date.

A migration that rebuilds a table (copies it into a new one, then ``EXCHANGE
TABLES a AND b``) loses whatever is written to ``a`` between the copy and the
exchange. On a store that others may be writing (``exclusive=False``: a
server) the runner therefore refuses to start it while ``a`` is being
written, and aborts before the exchange if ``a`` was written during the copy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from .lease import Lease, LeaseLostError, holder_name
from .sql_text import Token, split_statements, tokens
from .store import StoreError

__all__ = [
    "DEFAULT_QUIET",
    "MIGRATION_LEASE",
    "Migration",
    "MigrationError",
    "MigrationsPendingError",
    "apply_migrations",
    "load_migrations",
    "pending_migrations",
    "require_migrated",
]

TRACKING_TABLE = "segwatch_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

MIGRATION_LEASE = "migrations"
_LEASE_SECONDS = 600.0
"""A generation of the migrations lease: renewed by a thread while a run lasts; a crashed
runner's keeps other runners waiting this long."""
DEFAULT_QUIET = 60.0
"""Seconds a table must have gone unwritten before a migration on a shared store rebuilds
it: longer than any collector's ``storage.flush_interval`` (60 s at most)."""

_CREATE_TRACKING = f"""
CREATE TABLE IF NOT EXISTS {TRACKING_TABLE}
(
    version UInt32 COMMENT 'Migration number, from the file name',
    name String COMMENT 'Migration file name',
    checksum String COMMENT 'SHA-256 of the file as applied',
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'When it was applied'
)
ENGINE = MergeTree ORDER BY version
COMMENT 'segwatch: schema migrations applied to this database'
"""


class MigrationError(RuntimeError):
    """The migrations on disk and the ones applied do not agree, or one cannot run now."""


class MigrationsPendingError(StoreError):
    """The store lacks migrations this version needs; ``segwatch migrate`` applies them."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str = "segwatch.clickhouse.migrations") -> list[Migration]:
    """The migrations shipped in ``package``, sorted; refuses gaps and duplicates."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if not match:
            raise MigrationError(f"migration file {entry.name!r} must be named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration numbers must run 1, 2, 3, ... without gaps or repeats; "
                f"found {migration.name} where number {expected} was expected"
            )
    return found


def pending_migrations(
    client: Client, migrations: list[Migration] | None = None
) -> list[Migration]:
    """The migrations not applied to the store yet, in order; creates nothing.

    Raises :class:`MigrationError` when an applied migration differs from the
    shipped file of its number.
    """
    migrations = load_migrations() if migrations is None else migrations
    applied = _applied(client)
    for migration in migrations:
        name, checksum = applied.get(migration.version, (migration.name, migration.checksum))
        if checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.name} differs from the {name} applied to this "
                "database; shipped migrations must never be edited (add a new one), and a "
                "store migrated in its cluster form is compared with that form (--cluster)"
            )
    return [migration for migration in migrations if migration.version not in applied]


def require_migrated(client: Client, migrations: list[Migration] | None = None) -> None:
    """Raise :class:`MigrationsPendingError` naming what the store lacks, if anything.

    For a process that must not migrate a shared store itself (a collector on
    a server): it waits for ``segwatch migrate`` instead.
    """
    pending = pending_migrations(client, migrations)
    if pending:
        names = ", ".join(migration.name for migration in pending)
        raise MigrationsPendingError(
            f"the store lacks {len(pending)} migration(s) this version of segwatch needs "
            f"({names}): run `segwatch migrate` against it"
        )


def apply_migrations(
    client: Client,
    migrations: list[Migration] | None = None,
    *,
    exclusive: bool | None = None,
    quiet: float = DEFAULT_QUIET,
    wait: float = 60.0,
    holder: str | None = None,
    lease_seconds: float = _LEASE_SECONDS,
) -> list[str]:
    """Apply every migration not applied yet; the names applied now.

    ``exclusive`` says nothing else writes the store while this runs; None
    infers it from the client: an embedded store is locked by the process that
    opened it, a server is not. An exclusive store is migrated without a
    lease. A shared one under the ``migrations`` lease (``lease_seconds`` a
    generation, renewed by a thread meanwhile): this waits up to ``wait``
    seconds for another runner's (then :class:`~.lease.LeaseHeldError`,
    naming it), and raises :class:`MigrationError` if the lease is lost before
    an ``EXCHANGE`` or before a migration is recorded. On a shared store a
    migration that rebuilds a table is also refused while the table has been
    written within ``quiet`` seconds, and aborted (its copy dropped) if the
    table is written during the copy: :class:`MigrationError` either way,
    nothing lost. Blocks for the whole run.
    """
    migrations = load_migrations() if migrations is None else migrations
    client.command(_CREATE_TRACKING)
    if not pending_migrations(client, migrations):
        return []  # the common start: no lease taken, nothing written
    if _is_embedded(client) if exclusive is None else exclusive:
        return [_apply_one(client, m, None, None) for m in pending_migrations(client, migrations)]
    lease = Lease(client, MIGRATION_LEASE, holder or holder_name("migrate"),
                  seconds=lease_seconds, wait=wait)  # fmt: skip
    with lease, _renewing_client(client) as renewing, lease.kept(renewing):
        # Read again under the lease: what another runner applied meanwhile is done.
        return [_apply_one(client, m, lease, quiet) for m in pending_migrations(client, migrations)]


def _apply_one(
    client: Client, migration: Migration, lease: Lease | None, quiet: float | None
) -> str:
    """Run one migration's statements and record it; its name.

    ``lease`` None: nobody else migrates; ``quiet`` None: nobody else writes.
    """
    statements = split_statements(migration.sql)
    guard = _RebuildGuard.of(client, migration, statements, quiet)
    for statement in statements:
        if _exchanged_tables(statement) is not None:
            if guard is not None:
                guard.check_unwritten()
            _confirm_lease(lease, migration, "its EXCHANGE")
        client.command(statement)
    _confirm_lease(lease, migration, "being recorded as applied")
    client.insert(
        TRACKING_TABLE,
        [[migration.version, migration.name, migration.checksum]],
        column_names=["version", "name", "checksum"],
    )
    return migration.name


def _confirm_lease(lease: Lease | None, migration: Migration, step: str) -> None:
    """Raise :class:`MigrationError` unless this runner still holds ``lease`` (renewed now)."""
    if lease is None:
        return
    try:
        lease.confirm()
    except LeaseLostError as exc:
        raise MigrationError(
            f"{migration.name} stopped before {step}: this runner lost the migrations lease "
            f"({exc}), and another runner may be applying the same migration, so this one "
            "leaves it to that runner; run segwatch migrate again once it is done"
        ) from exc


@contextmanager
def _renewing_client(client: Client) -> Iterator[Client]:
    """A client the lease's renewing thread may use while ``client`` runs a statement.

    A server client sends each request on its own (no session), so both
    threads share it; an embedded client runs one call at a time, so the
    thread gets its own on the same store (one process may open a store
    directory through several clients).
    """
    if not _is_embedded(client):
        yield client
        return
    path = getattr(client, "path", None)
    sibling = clickhouse_connect.get_client(interface="chdb", path=path, database=client.database)
    try:
        yield sibling
    finally:
        sibling.close()


def _applied(client: Client) -> dict[int, tuple[str, str]]:
    """Version -> (name, checksum) of what the tracking table records; {} without one."""
    if str(client.command(f"EXISTS TABLE {TRACKING_TABLE}")).strip() != "1":
        return {}
    rows = client.query(f"SELECT version, name, checksum FROM {TRACKING_TABLE}").result_rows
    return {int(version): (name, checksum) for version, name, checksum in rows}


def _is_embedded(client: Client) -> bool:
    return str(getattr(client, "uri", "")).startswith("chdb://")


@dataclass(frozen=True)
class _Exchange:
    """An ``EXCHANGE TABLES a AND b [ON CLUSTER c]`` statement, read."""

    table: str
    """``a`` unquoted, ``db.t`` or ``t``: the table rebuilt."""
    copy: str
    """``b`` as written: the rebuilt copy."""
    on_cluster: str
    """`` ON CLUSTER c`` as written, or ``""``."""


def _exchanged_tables(statement: str) -> _Exchange | None:
    """What an ``EXCHANGE TABLES`` statement swaps; None for any other statement."""
    words = tokens(statement)
    if [word.keyword() for word in words[:2]] != ["EXCHANGE", "TABLES"]:
        return None
    table, _, middle = _dotted_name(words, 2)
    if middle >= len(words) or words[middle].keyword() != "AND":
        return None
    _, copy, end = _dotted_name(words, middle + 1)
    rest = words[end:]
    on_cluster = ""
    if [word.keyword() for word in rest[:2]] == ["ON", "CLUSTER"] and len(rest) > 2:
        on_cluster = " ON CLUSTER " + rest[2].text
    return _Exchange(table, copy, on_cluster)


def _dotted_name(words: list[Token], start: int) -> tuple[str, str, int]:
    """The name at ``words[start]`` (``t``, ``db.t``, quoted parts): unquoted, as written,
    and the index past it."""
    end = start + 1
    while end + 1 < len(words) and (words[end].kind, words[end].text) == ("punct", "."):
        end += 2
    parts = words[start:end:2]
    unquoted = ".".join(w.text[1:-1] if w.kind == "ident" else w.text for w in parts)
    return unquoted, ".".join(w.text for w in parts), end


class _RebuildGuard:
    """Keeps a migration from rebuilding a table that another process is writing.

    "Written" is read from ``system.parts``: the newest active part's age,
    and per partition the highest block number of the active parts. Every
    insert takes a new block number; merges keep the highest one, so merging
    (which changes ``count()`` of an aggregating table) is not taken for writing.
    The parts are those of the node the client reaches (on a cluster, that
    node's replica of its shard). What lands between the last look and the
    ``EXCHANGE`` (two statements apart) is not seen.
    """

    def __init__(self, client: Client, migration: Migration, exchange: _Exchange) -> None:
        self.client, self.migration, self.exchange = client, migration, exchange
        self.table = exchange.table
        self.database, _, self.name = exchange.table.rpartition(".")
        self.blocks_before = self._blocks()

    @classmethod
    def of(
        cls, client: Client, migration: Migration, statements: list[str], quiet: float | None
    ) -> _RebuildGuard | None:
        """The guard of a migration that rebuilds a table, after checking the table has
        gone ``quiet`` seconds unwritten; None when there is nothing to guard."""
        exchanges = [found for found in map(_exchanged_tables, statements) if found is not None]
        if quiet is None or not exchanges:
            return None
        guard = cls(client, migration, exchanges[0])
        age = guard._newest_part_age()
        if age is not None and age < quiet:
            raise guard._refusal(
                f"its newest data was written {age} s ago; run `segwatch migrate` again "
                f"once nothing has written it for {quiet:g} s"
            )
        return guard

    def check_unwritten(self) -> None:
        """Just before the exchange: abort, dropping the copy, if the table was written."""
        if self._blocks() != self.blocks_before:
            copy = self.exchange
            self.client.command(f"DROP TABLE IF EXISTS {copy.copy}{copy.on_cluster} SYNC")
            raise self._refusal(
                f"it was written while {self.migration.name} copied it; the copy is dropped, "
                "nothing is lost"
            )

    def _refusal(self, detail: str) -> MigrationError:
        return MigrationError(
            f"a collector is still writing {self.table}, which migration "
            f"{self.migration.name} rebuilds (rows written during the rebuild would be lost): "
            f"{detail}. Stop the collectors of the older version first (collectors of this "
            "version wait for the migration, keeping their data in the spool)."
        )

    def _parts(self, select: str, group_by: str = "") -> list[tuple[Any, ...]]:
        """``select`` over the table's active parts."""
        return [tuple(row) for row in self.client.query(
            f"SELECT {select} FROM system.parts WHERE active AND table = {{name:String}} "
            "AND database = if({database:String} = '', currentDatabase(), {database:String})"
            + (f" GROUP BY {group_by}" if group_by else ""),
            parameters={"name": self.name, "database": self.database},
        ).result_rows]  # fmt: skip

    def _blocks(self) -> list[tuple[Any, ...]]:
        """Per partition, the highest block number written: changed by inserts only."""
        return sorted(self._parts("partition_id, max(max_block_number)", "partition_id"))

    def _newest_part_age(self) -> int | None:
        """Seconds since the newest active part was written (or merged); None: no parts."""
        ((parts, age),) = self._parts("count(), dateDiff('second', max(modification_time), now())")
        return int(age) if parts else None
