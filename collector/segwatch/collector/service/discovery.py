"""The discovery file: how the CLI finds the collector that holds an embedded store.

An embedded store is locked by one process, so while a collector runs, the CLI
reaches the store through the collector's local API. The collector announces
that API (address, token, pid, OTLP address) in a file inside the store's
directory, created 0600 and renamed into place whole; the CLI reads it and
checks the pid is alive. Server stores (``http(s)://``) have no discovery file.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from typing import Any

from segwatch.clickhouse.store import StoreError, StoreLocation, StoreLockedError

__all__ = [
    "DISCOVERY_FILE",
    "discovery_path",
    "read_discovery",
    "refuse_if_held",
    "refuse_if_locked",
    "remove_own_discovery",
    "write_discovery",
]

DISCOVERY_FILE = "segwatch-collector.json"


def discovery_path(location: StoreLocation) -> str | None:
    """Where a collector on this store announces its local API (embedded stores only)."""
    if location.path is None:
        return None
    return os.path.join(location.path, DISCOVERY_FILE)


def read_discovery(location: StoreLocation) -> dict[str, Any] | None:
    """The running collector's announcement, if its process is alive."""
    path = discovery_path(location)
    if path is None or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            info: dict[str, Any] = json.load(handle)
    except PermissionError as exc:
        raise StoreError(
            f"cannot read {path}: it holds the running collector's API token and only the "
            "collector's user may read it"
        ) from exc
    except (OSError, ValueError):
        return None  # half gone: the collector that wrote it is stopping
    try:
        os.kill(int(info["pid"]), 0)
    except PermissionError:
        pass  # alive, another user's process
    except (OSError, ValueError, KeyError, TypeError):
        return None  # stale: the collector that wrote it is gone
    return info


def refuse_if_held(location: StoreLocation, locked_too: bool = True) -> None:
    """Raise :class:`StoreLockedError` if a live process announces itself on this embedded
    store (a second one would wait on the engine's lock and take over the announcement), or,
    with ``locked_too``, holds the engine's lock on it unannounced (:func:`refuse_if_locked`).

    A collector passes ``locked_too=False``: a store held by a process that announces
    nothing (a backup, a one-off script) is an outage to it, acknowledged into the spool
    until the store is free, and its store connection asks :func:`refuse_if_locked` before
    each try, so the engine's own refusal text is never printed."""
    info = read_discovery(location)
    if info is None or int(info.get("pid", 0)) == os.getpid():
        if locked_too:
            refuse_if_locked(location)
        return
    if "api" in info:
        raise StoreLockedError(
            f"the embedded store {location.path} is held by a running collector (pid "
            f"{info['pid']}, API {info['api']}): stop it, or give this process another store"
        )
    served = info.get("serve")
    raise StoreLockedError(
        f"the embedded store {location.path} is served by segwatch serve at {served} (pid "
        f"{info['pid']}): point storage.dsn at {served}/{location.database} to write through it"
    )


def refuse_if_locked(location: StoreLocation) -> None:
    """Raise :class:`StoreLockedError`, naming the store and the process, if another process
    holds the engine's lock on this embedded store.

    Asked before the engine opens it: the engine, refused, prints its own multi-line
    exception text on stderr. The engine keeps a ``status`` file in the store, locked
    (``flock``) while open, that names the holder's pid.
    """
    if location.path is None:
        return
    try:
        with open(os.path.join(location.path, "status"), "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = handle.read()
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
                return
    except OSError:
        return  # no status file: no process has the store open
    match = re.search(rb"PID: (\d+)", holder)
    pid = int(match.group(1)) if match else None
    if pid == os.getpid():
        return  # this process: the engine lets it open its own store again
    raise StoreLockedError(
        f"the embedded store {location.path} is open in another process ({_describe(pid)}), "
        "which announces no collector API to reach it through: stop that process, or give "
        "this one another store"
    )


def _describe(pid: int | None) -> str:
    """``pid 4242: segwatch collector --config x.yaml``, as far as ``/proc`` tells."""
    if pid is None:
        return "its pid unknown"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = [os.path.basename(w) if i == 0 else w
                     for i, w in enumerate(handle.read().decode(errors="replace").split("\0"))
                     if w]  # fmt: skip
    except OSError:
        return f"pid {pid}"
    command = " ".join(" ".join(words).split())  # one line, whatever its arguments hold
    return f"pid {pid}: {command[:120]}" if command else f"pid {pid}"


def write_discovery(path: str, info: dict[str, Any]) -> None:
    """Announce this process's API at ``path``: ``info`` plus this pid, created 0600, whole."""
    # It holds the API's token: created 0600 (never readable by others, whatever
    # the umask), then renamed into place whole.
    temporary = f"{path}.{os.getpid()}.tmp"
    if os.path.lexists(temporary):
        os.remove(temporary)  # left by a killed process that had this pid
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), **info}, handle)
    os.replace(temporary, path)


def remove_own_discovery(path: str) -> None:
    """Remove the announcement at ``path`` if this process wrote it (another may have since)."""
    try:
        with open(path, encoding="utf-8") as handle:
            if json.load(handle).get("pid") == os.getpid():
                os.remove(path)
    except (OSError, ValueError):
        pass
