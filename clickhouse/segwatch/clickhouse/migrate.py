"""Applying the numbered ``.sql`` migrations, once each and in order.

Migration files are named ``NNNN_description.sql`` and are never edited once
shipped: a changed file is refused (its checksum no longer matches what the
tracking table recorded). Each applied migration is recorded in
``segwatch_migrations``; running again applies only what is new. Exactly one
process should run this (the collector at start, or ``segwatch migrate``),
never every replica racing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.client import Client

from .sql_text import split_statements

__all__ = ["Migration", "MigrationError", "apply_migrations", "load_migrations"]

TRACKING_TABLE = "segwatch_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

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
    """The migrations on disk and the ones applied do not agree."""


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


def apply_migrations(client: Client, migrations: list[Migration] | None = None) -> list[str]:
    """Apply every migration not applied yet; return the names applied now."""
    migrations = load_migrations() if migrations is None else migrations
    client.command(_CREATE_TRACKING)
    rows = client.query(f"SELECT version, name, checksum FROM {TRACKING_TABLE}").result_rows
    applied = {int(version): (name, checksum) for version, name, checksum in rows}
    newly_applied: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            name, checksum = applied[migration.version]
            if checksum != migration.checksum:
                raise MigrationError(
                    f"migration {migration.name} differs from the {name} applied to this "
                    "database; shipped migrations must never be edited (add a new one)"
                )
            continue
        for statement in split_statements(migration.sql):
            client.command(statement)
        client.insert(
            TRACKING_TABLE,
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        newly_applied.append(migration.name)
    return newly_applied
