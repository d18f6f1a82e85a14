"""The ``storage`` section: where the data goes, the spool before it, and how long it stays."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Final

from segwatch.clickhouse.detection import parse_duration
from segwatch.clickhouse.store import DEFAULT_DSN
from segwatch.clickhouse.yaml_schema import Problems, Record, Scalar, at_least, between, one_of

from . import checks
from .files import resolve_dsn, resolve_path

__all__ = [
    "FOREVER",
    "MIN_RETENTION",
    "STORAGE_SCHEMA",
    "RetentionConfig",
    "SpoolConfig",
    "StorageConfig",
    "TracesConfig",
    "build_storage",
    "check_storage",
    "retention_seconds",
]

FOREVER: Final = 0
"""A retention of ``forever``: the kind's tables get no TTL."""

MIN_RETENTION: Final = 3600
"""The shortest retention, in seconds: the newest hour is still being written and read."""


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
class RetentionConfig:
    """How long the store keeps each kind of row, in seconds, as its tables' TTLs.

    ``None`` (the key left out) leaves the tables' TTLs as they are: raw calls
    30 days (the migrations'), everything else kept. :data:`FOREVER` removes
    the TTL. A row's age is that of its own time (the call's, the bucket's, the
    window's end), not of its arrival.
    """

    raw_calls: int | None = None  # ml_model_calls
    labels: int | None = None  # ml_labels
    aggregates: int | None = None  # ml_segment_aggregates and its 5-minute and 1-hour roll-ups
    anomalies: int | None = None  # ml_anomalies, ml_anomaly_events, ml_incident_members
    traces: int | None = None  # otel_traces and otel_traces_trace_id_ts (written by segwatch)


@dataclass(frozen=True)
class TracesConfig:
    """Which model-call spans go to ``otel_traces``, the OpenTelemetry Collector
    ``clickhouseexporter``'s table, as they were sent (trace views read it).

    ``write: false`` is for a store where an OpenTelemetry Collector's
    clickhouseexporter already writes ``otel_traces``: segwatch then writes none
    and its trace links read what that exporter keeps.
    """

    write: bool = True
    # The share of traces whose model-call spans are written, chosen by trace id as
    # OTel's TraceIdRatioBased sampler does (the low 8 bytes), so a trace is kept whole
    # and a service sampling at the same rate keeps a superset of the same traces.
    sample: float = 0.01
    # always: every span whose trace id an aggregate keeps as an exemplar is written too,
    # so each trace id an anomaly names opens in a trace view; never: the sample alone.
    exemplars: str = "always"


def retention_seconds(text: str | int) -> int:
    """``30d`` → 2592000; ``forever`` → :data:`FOREVER`; ``ValueError`` for anything else."""
    if isinstance(text, str) and text.strip() == "forever":
        return FOREVER
    try:
        seconds = parse_duration(str(text))
    except ValueError:
        raise ValueError(
            f"{text!r} must be a duration with its unit (30d, 12h) or forever"
        ) from None
    if seconds < MIN_RETENTION:
        raise ValueError(
            f"{text!r} is shorter than an hour: rows would expire while still being written"
        )
    return seconds


@dataclass(frozen=True)
class StorageConfig:
    dsn: str = DEFAULT_DSN
    raw_calls: bool = True
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    histogram_accuracy: float = 0.01  # relative accuracy of the stored histograms, store-wide
    # Inserts return once their parts are fsynced (see part_durability): acknowledged
    # calls survive a power loss, not only a crash of the collector.
    fsync_parts: bool = True
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    traces: TracesConfig = field(default_factory=TracesConfig)


def _check_retention(value: str | int) -> None:
    retention_seconds(value)


_RETENTION = Scalar((str, int), _check_retention)

STORAGE_SCHEMA = Record({
    "dsn": Scalar(str, checks.dsn),
    "raw_calls": Scalar(bool),
    "histogram_accuracy": Scalar((int, float), between(0.0005, 0.2)),
    "fsync_parts": Scalar(bool),
    "retention": Record({
        "raw_calls": _RETENTION, "labels": _RETENTION,
        "aggregates": _RETENTION, "anomalies": _RETENTION, "traces": _RETENTION,
    }),
    "traces": Record({
        "write": Scalar(bool),
        "sample": Scalar((int, float), between(0.0, 1.0)),
        "exemplars": Scalar(str, one_of("always", "never")),
    }),
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


def check_storage(storage: StorageConfig, problems: Problems) -> None:
    """What the schema alone cannot tell: a TTL for a table another writer owns."""
    if not storage.traces.write and storage.retention.traces is not None:
        problems.at(
            "storage.retention.traces",
            "otel_traces belongs to the OpenTelemetry Collector that writes it "
            "(storage.traces.write: false): set its TTL there (the exporter's ttl)",
        )


def build_storage(spec: dict[str, Any], base_dir: str | None) -> StorageConfig:
    """The validated section, its paths resolved against ``base_dir`` (the file's directory)."""
    storage = {k: v for k, v in spec.items() if k not in ("spool", "retention", "traces")}
    # The default store too lives beside the file: every command reading it finds the same.
    storage["dsn"] = resolve_dsn(base_dir, storage.get("dsn", DEFAULT_DSN))
    spool = dict(spec.get("spool", {}))
    if "path" in spool:
        spool["path"] = resolve_path(base_dir, spool["path"])
    elif base_dir is not None and storage["dsn"].startswith(("http://", "https://")):
        # A server's collector keeps its spool beside the file too, not wherever it started.
        spool["path"] = os.path.join(base_dir, "segwatch-spool")
    retention = {key: retention_seconds(text) for key, text in spec.get("retention", {}).items()}
    return StorageConfig(
        **storage,
        spool=SpoolConfig(**spool),
        retention=RetentionConfig(**retention),
        traces=TracesConfig(**spec.get("traces", {})),
    )
