"""The ``storage`` section: where the data goes, and the write-ahead spool before it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from segwatch.clickhouse.store import DEFAULT_DSN
from segwatch.clickhouse.yaml_schema import Record, Scalar, at_least, between

from . import checks
from .files import resolve_dsn, resolve_path

__all__ = ["STORAGE_SCHEMA", "SpoolConfig", "StorageConfig", "build_storage"]


@dataclass(frozen=True)
class SpoolConfig:
    """The write-ahead spool: requests are acknowledged once in it, flushed to the store later."""

    enabled: bool = True
    path: str = ""  # default: <store dir>/segwatch-spool, or ./segwatch-spool for a server
    max_mib: int = 1024  # unflushed data it may hold before the receiver answers UNAVAILABLE
    flush_interval: float = 1.0  # seconds between flushes to the store
    # Memory against throughput: calls per flush (bigger flushes: fewer parts for
    # ClickHouse to merge, more memory per flush) and calls waiting for the store
    # before the receiver holds back its answers (back-pressure). bench/ingest.py
    # measures the trade (CPU per span against RSS) for other values.
    flush_calls: int = 20_000
    max_pending_calls: int = 40_000
    # A flush failing this many times while the store answers (it refuses the data, or
    # aggregating raised) is set aside as a dead letter; store outages never count.
    max_flush_attempts: int = 10


@dataclass(frozen=True)
class StorageConfig:
    dsn: str = DEFAULT_DSN
    raw_calls: bool = True
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    histogram_accuracy: float = 0.01  # relative accuracy of the stored histograms, store-wide
    # Inserts return once their parts are fsynced (see part_durability): acknowledged
    # calls survive a power loss, not only a crash of the collector.
    fsync_parts: bool = True


STORAGE_SCHEMA = Record({
    "dsn": Scalar(str, checks.dsn),
    "raw_calls": Scalar(bool),
    "histogram_accuracy": Scalar((int, float), between(0.0005, 0.2)),
    "fsync_parts": Scalar(bool),
    "spool": Record({
        "enabled": Scalar(bool),
        "path": Scalar(str),
        "max_mib": Scalar(int, at_least(16)),
        "flush_interval": Scalar((int, float), between(0.01, 60)),
        "flush_calls": Scalar(int, between(100, 10_000_000)),
        "max_pending_calls": Scalar(int, between(100, 100_000_000)),
        "max_flush_attempts": Scalar(int, between(1, 1000)),
    }),
})  # fmt: skip


def build_storage(spec: dict[str, Any], base_dir: str | None) -> StorageConfig:
    """The validated section, its paths resolved against ``base_dir`` (the file's directory)."""
    storage = {k: v for k, v in spec.items() if k != "spool"}
    # The default store too lives beside the file: every command reading it finds the same.
    storage["dsn"] = resolve_dsn(base_dir, storage.get("dsn", DEFAULT_DSN))
    spool = dict(spec.get("spool", {}))
    if "path" in spool:
        spool["path"] = resolve_path(base_dir, spool["path"])
    elif base_dir is not None and storage["dsn"].startswith(("http://", "https://")):
        # A server's collector keeps its spool beside the file too, not wherever it started.
        spool["path"] = os.path.join(base_dir, "segwatch-spool")
    return StorageConfig(**storage, spool=SpoolConfig(**spool))
