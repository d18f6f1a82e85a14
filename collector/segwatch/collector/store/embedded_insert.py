"""Inserts into the embedded engine straight from memory, through chdb's streaming insert.

clickhouse-connect's chdb backend writes every insert's bytes to a temporary
file and has the engine read it back (``INSERT ... FROM INFILE``): each byte
is copied through the page cache twice, the file is created, written and
unlinked once per insert. chdb's own ``send_insert`` takes the Native bytes
as they are encoded, in the same engine session: the client's handle, under its
lock, so the settings set on the handle when the client was made apply as to any
other call; for less CPU per insert (README, Benchmarks). The pieces are encoded
while the engine reads them, under that lock. A Python error while encoding
cancels the insert: nothing of it is stored unless it was past the engine's block
size (``min_insert_block_size_rows``, about a million rows), more than any one
insert of segwatch's holds.

It reaches the handle through clickhouse-connect's backend, which has no public
way to it: :func:`stream_insert` answers False when the client is not an
embedded one or its backend is not shaped as expected, and the caller inserts
the usual way. ``tests/collector/test_embedded_insert.py`` fails if an
embedded client stops taking this path.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from clickhouse_connect.driver.client import Client

__all__ = ["stream_insert"]

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def stream_insert(
    client: Client,
    table: str,
    column_names: Iterable[str],
    pieces: Iterable[bytes],
    settings: Mapping[str, Any],
) -> bool:
    """``INSERT INTO table (column_names) SETTINGS settings FORMAT Native`` of ``pieces``
    (one Native stream), through the embedded engine's streaming insert.

    False, with nothing read from ``pieces``, when ``client`` has no embedded engine
    handle (a server's client). An engine error is raised as clickhouse-connect
    raises it for any query (``DatabaseError`` with its code).
    """
    backend = getattr(client, "_backend", None)
    handle = getattr(backend, "_handle", None)
    lock = getattr(handle, "lock", None)
    if lock is None or not hasattr(getattr(handle, "conn", None), "send_insert"):
        return False
    if getattr(handle, "stream_owner", None) == threading.get_ident():
        return False  # this thread reads a result on the handle: the usual path says so
    keep = getattr(backend, "_engine_settings", None)  # drops transport-only settings
    settings = keep(settings) if keep is not None else settings
    database = f"{_identifier(client.database)}." if client.database else ""
    columns = ", ".join(_identifier(name) for name in column_names)
    clause = ", ".join(f"{_setting(name)} = {_literal(value)}" for name, value in settings.items())
    sql = f"INSERT INTO {database}{_identifier(table)} ({columns})"
    if clause:
        sql += f" SETTINGS {clause}"
    engine_error = getattr(backend, "_wrap_exception", None)
    with lock:
        connection = getattr(handle, "conn", None)  # under the lock: a close sets None
        if connection is None or getattr(backend, "_closed", False):
            return False  # closed meanwhile: the usual path raises the client's own error
        inserter = _engine_call(engine_error, connection.send_insert, sql, "Native")
        try:
            # Encoded as they are asked for, under the handle's lock (as the engine reads
            # them); an encoding error is raised as it is, and the insert is cancelled.
            for piece in pieces:
                _engine_call(engine_error, inserter.append, piece)
            _engine_call(engine_error, inserter.finish)
        except BaseException:
            with contextlib.suppress(Exception):  # a failed insert may be over already
                inserter.cancel()
            raise
    return True


def _engine_call(engine_error: Any, call: Any, *args: Any) -> Any:
    """``call(*args)``; an engine error raised as clickhouse-connect raises it for a query."""
    try:
        return call(*args)
    except Exception as exc:
        if engine_error is None:
            raise
        raise engine_error(exc) from exc


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _setting(name: str) -> str:
    if not _SETTING_NAME.match(name):
        raise ValueError(f"not a setting name: {name!r}")
    return name


def _literal(value: Any) -> str:
    """A setting's value quoted (the engine converts a quoted number where the setting is
    numeric); booleans as 1 and 0."""
    text = str(int(value)) if isinstance(value, bool) else str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
