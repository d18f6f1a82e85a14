"""Which config file a command reads, and what the relative paths in it mean.

Discovery, as the tools SREs use do it: ``--config FILE``, else the file
:data:`CONFIG_ENV` names, else ``./segwatch.yaml`` if it exists, else none (the
defaults). A relative path written in a config file (``storage.dsn:
chdb://data``, ``storage.spool.path``, the TLS files) is relative to the
file's directory, never to the directory a command happens to run in.
"""

from __future__ import annotations

import os
from typing import Final
from urllib.parse import quote, unquote

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG_FILE", "find_config", "resolve_dsn", "resolve_path"]

CONFIG_ENV: Final = "SEGWATCH_CONFIG"
"""The config file a command reads when it is given no ``--config``."""
DEFAULT_CONFIG_FILE: Final = "segwatch.yaml"
"""Read from the current directory when neither ``--config`` nor :data:`CONFIG_ENV` names one."""


def find_config(explicit: str | None) -> str | None:
    """The config file to read: ``explicit``, else ``$SEGWATCH_CONFIG``, else
    ``./segwatch.yaml`` if it exists; ``None``: no file, the defaults."""
    if explicit:
        return explicit
    named = os.environ.get(CONFIG_ENV)
    if named:
        return named
    return DEFAULT_CONFIG_FILE if os.path.isfile(DEFAULT_CONFIG_FILE) else None


def resolve_path(base_dir: str | None, path: str) -> str:
    """``path`` made absolute against ``base_dir`` (the config file's directory)."""
    if not path or base_dir is None or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def resolve_dsn(base_dir: str | None, dsn: str) -> str:
    """An embedded DSN's relative directory made absolute against ``base_dir``.

    In-memory and server DSNs are returned as they are.
    """
    scheme, sep, rest = dsn.partition("://")
    if scheme != "chdb" or not sep or "?" in rest or rest in ("", "memory", ":memory:"):
        return dsn
    path = unquote(rest)
    if os.path.isabs(path) or base_dir is None:
        return dsn
    return f"chdb://{quote(resolve_path(base_dir, path), safe='/')}"
