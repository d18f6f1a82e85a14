"""Opening the ClickHouse store a DSN names: embedded (chdb) or a server (http/https).

segwatch reads ``chdb://<dir>`` as "the directory <dir>", relative or absolute
(``chdb://./segwatch-data``, ``chdb:///var/lib/segwatch``); ``chdb://memory`` is
an in-memory engine. ``http(s)://user:pass@host:8123/db`` reaches a server,
and the DSN's database (default ``segwatch``) is created if missing.

An embedded store is locked by the one process that opens it; a second process
gets :class:`StoreLockedError`. Readers use :func:`open_existing_client`: a DSN that
names no existing store is :class:`StoreNotFoundError`, never a new, empty one.
"""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_DSN",
    "DETECTOR_SETTINGS",
    "StoreError",
    "StoreLocation",
    "StoreLockedError",
    "StoreNotFoundError",
    "detector_query_settings",
    "error_code",
    "open_client",
    "open_existing_client",
    "parse_dsn",
    "redact_dsn",
    "validate_identifier",
]

DEFAULT_DSN = "chdb://./segwatch-data"
DEFAULT_DATABASE = "segwatch"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

DETECTOR_SETTINGS: dict[str, int | str] = {
    # A detector run's queries and roll-ups aggregate and sort every segment of their
    # windows, in the collector's own process when the store is embedded: past these
    # sizes their GROUP BY and ORDER BY spill to disk instead of growing the process,
    # and a query that still needs more than max_memory_usage fails (that run only)
    # rather than take the collector's memory.
    "max_bytes_before_external_group_by": 200 << 20,
    "max_bytes_before_external_sort": 200 << 20,
    "max_memory_usage": 1 << 30,
    # A detector reads a roll-up row's maps as `sumMapIf(histogram, is_current AND
    # sw_maps_read(maps))` (detectors/rolled_up.sql): the check, which stops the query
    # on a row rolled up without its maps, must run only on the rows the condition
    # selects. That is the default, but a server profile may say 'disable', and then
    # every data_quality run would stop on its baseline's rows.
    "short_circuit_function_evaluation": "enable",
}
"""Settings of every query a detector run makes (see :mod:`segwatch.clickhouse.detection`)."""

_FASTER_PLANNING: dict[str, int | str] = {"optimize_and_compare_chain": 0}
"""The analyzer pass that derives comparisons implied by AND chains (``a < b AND b < 5``
gives ``a < 5``, for indexes) walked a detector's large query tree for a third of its
planning: psi_drift planned in 0.40 s with it, 0.24 s without (of a 0.69 s run on the
1 M-row backfill scenario), with the same results. Their filters are on plain columns
and parameters, which the indexes use without it. The setting is ClickHouse 25.2's: an
older server refuses a setting it does not know, so it is sent only where the server
lists it."""


def detector_query_settings(client: Client) -> dict[str, int | str]:
    """The settings of a detector's own query: DETECTOR_SETTINGS, and the faster planning
    where the client's server has its setting."""
    known = client.server_settings
    return {**DETECTOR_SETTINGS, **{k: v for k, v in _FASTER_PLANNING.items() if k in known}}


class StoreError(RuntimeError):
    """The store cannot be reached or opened."""


class StoreLockedError(StoreError):
    """Another process holds the embedded store."""


class StoreNotFoundError(StoreError):
    """The DSN names no existing store (and the caller asked not to create one)."""


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of an exception: its ``code`` (clickhouse-connect sets it
    for a server's errors), else the ``Code: N.`` in its text (the embedded engine's)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    found = re.search(r"\bCode:\s*(\d+)", str(exc))
    return int(found.group(1)) if found else None


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ``ValueError``.

    Identifiers are the only things segwatch ever formats into SQL; this keeps
    them to letters, digits and underscores.
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} must match {_IDENTIFIER.pattern}")
    return name


@dataclass(frozen=True)
class StoreLocation:
    """Where a DSN points: an embedded directory (``path``) or a server (``url``)."""

    dsn: str
    embedded: bool
    path: str | None
    database: str

    @property
    def in_memory(self) -> bool:
        return self.embedded and self.path is None


def parse_dsn(dsn: str) -> StoreLocation:
    """Validate a storage DSN; raise ``ValueError`` naming what is wrong."""
    if not isinstance(dsn, str) or "://" not in dsn:
        raise ValueError(
            f"storage DSN {redact_dsn(str(dsn))!r} must look like chdb://DIR or http(s)://HOST:PORT/DB"
        )
    scheme, _, rest = dsn.partition("://")
    if scheme == "chdb":
        location, _, query = rest.partition("?")
        if query:
            raise ValueError(f"storage DSN {dsn!r}: chdb:// takes no options")
        if location in ("", "memory", ":memory:"):
            return StoreLocation(dsn, True, None, DEFAULT_DATABASE)
        return StoreLocation(dsn, True, os.path.abspath(unquote(location)), DEFAULT_DATABASE)
    if scheme in ("http", "https"):
        parsed = urlparse(dsn)
        if not parsed.hostname:
            raise ValueError(f"storage DSN {redact_dsn(dsn)!r} names no host")
        database = unquote(parsed.path.strip("/")) or DEFAULT_DATABASE
        validate_identifier(database, "database in storage DSN")
        return StoreLocation(dsn, False, None, database)
    raise ValueError(
        f"storage DSN {redact_dsn(dsn)!r}: scheme must be chdb, http or https, not {scheme!r}"
    )


def open_client(location: StoreLocation, **settings: Any) -> Client:
    """Open a client on the store's database, creating the database if needed."""
    return _open_client(location, True, settings)


def open_existing_client(location: StoreLocation, **settings: Any) -> Client:
    """Open a client on a store that exists; create nothing.

    A directory that does not exist or holds no segwatch store, an in-memory
    store, or a server without the database raise :class:`StoreNotFoundError`
    (and leave no trace).
    """
    return _open_client(location, False, settings)


def _open_client(location: StoreLocation, create: bool, settings: dict[str, Any]) -> Client:
    if not create and location.embedded:
        _check_embedded_store(location)
    try:
        if location.embedded:
            bootstrap = _open_embedded(location, None)
        else:
            bootstrap = _open_server(location, "default", {})
        # The bootstrap session has none of ``settings`` (they may say readonly).
        if create:
            bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {location.database}")
        elif str(bootstrap.command(f"EXISTS DATABASE {location.database}")).strip() != "1":
            bootstrap.close()
            raise StoreNotFoundError(
                f"no store at {redact_dsn(location.dsn)}: the server has no database "
                f"{location.database}"
            )
        if location.embedded:
            client = _open_embedded(location, location.database, settings)
        else:
            client = _open_server(location, location.database, settings)
        bootstrap.close()  # after the client is open: an embedded store stays locked
        return client
    except ClickHouseError as exc:
        raise StoreError(f"cannot open store {redact_dsn(location.dsn)}: {exc}") from exc


def _check_embedded_store(location: StoreLocation) -> None:
    """Raise :class:`StoreNotFoundError` unless the embedded store already exists."""
    if location.path is None:
        raise StoreNotFoundError(
            f"no store at {location.dsn}: an in-memory store lives and dies with the "
            "process that opened it"
        )
    # The engine keeps a database's definition in metadata/<database>.sql.
    if not os.path.isdir(location.path):
        raise StoreNotFoundError(f"no store at {location.path}: the directory does not exist")
    if not os.path.isfile(os.path.join(location.path, "metadata", f"{location.database}.sql")):
        raise StoreNotFoundError(
            f"no store at {location.path}: the directory holds no segwatch store"
        )


def _open_embedded(
    location: StoreLocation, database: str | None, settings: dict[str, Any] | None = None
) -> Client:
    if location.path is not None:
        os.makedirs(location.path, exist_ok=True)
    try:
        return clickhouse_connect.get_client(
            interface="chdb", path=location.path, database=database, settings=settings or {}
        )
    except ClickHouseError as exc:
        if location.path is not None and _held_by_another_process(location.path):
            raise StoreLockedError(
                f"the embedded store {location.path} is open in another process "
                "(a running collector?); reach it through that process or stop it"
            ) from exc
        if "already initialized with path" in str(exc):
            raise StoreError(
                "this process already has another embedded store open; "
                "chdb allows one store directory per process"
            ) from exc
        raise


def _held_by_another_process(path: str) -> bool:
    """True if another process holds the engine's lock on ``<path>/status``."""
    status = os.path.join(path, "status")
    if not os.path.exists(status):
        return False
    with open(status, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _open_server(location: StoreLocation, database: str, settings: dict[str, Any]) -> Client:
    """A client on a server's ``database``: every request stands alone (no ClickHouse
    session), so one client can serve several threads, as the embedded store's can, and
    its settings ride on each request."""
    return clickhouse_connect.get_client(
        dsn=_server_dsn(location),
        database=database,
        settings=settings,
        autogenerate_session_id=False,
    )


def _server_dsn(location: StoreLocation) -> str:
    parsed = urlparse(location.dsn)
    return parsed._replace(path="").geturl()


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    parsed = urlparse(dsn)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return dsn
