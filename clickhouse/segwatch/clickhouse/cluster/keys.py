"""Where each table of the migrations lives on a cluster: its sharding key and local name.

Why each table is sharded the way it is: see :mod:`segwatch.clickhouse.cluster`.
"""

from __future__ import annotations

from typing import Final

from .statement import ClusterRenderError

__all__ = [
    "CO_LOCATED_VIEWS",
    "LOCAL_SUFFIX",
    "REPLICA_ARGUMENTS",
    "RUNNER_TABLES",
    "SHARDING_KEYS",
    "sharding_key",
]

LOCAL_SUFFIX: Final = "_local"
"""The local (Replicated) table of ``t`` is ``t`` + this; ``t`` is the Distributed one."""

REPLICA_ARGUMENTS: Final = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
"""The Keeper path and replica name every Replicated table gets, from the server's macros."""

_SEGMENT_KEY = (
    "cityHash64(model_name, model_version, model_stage, quantity, segment_dim, segment_value)"
)
_FINDING_KEY = (
    "cityHash64(detector, model_name, model_version, model_stage, segment_dim, segment_value, "
    "quantity)"
)
SHARDING_KEYS: Final[dict[str, str]] = {
    "ml_segment_aggregates": _SEGMENT_KEY,
    "ml_segment_aggregates_by_time": _SEGMENT_KEY,
    "ml_segment_rollup_5m": _SEGMENT_KEY,
    "ml_segment_rollup_1h": _SEGMENT_KEY,
    "ml_late_buckets": "cityHash64(bucket_start)",  # a few rows, read with max(): any shard
    "ml_baseline_aggregates": (
        "cityHash64(baseline_name, model_name, model_version, quantity, segment_dim, segment_value)"
    ),
    "ml_model_calls": "cityHash64(model_name, if(prediction_id = '', span_id, prediction_id))",
    "ml_labels": "cityHash64(model_name, prediction_id)",
    "ml_anomalies": _FINDING_KEY,
    "ml_anomaly_events": _FINDING_KEY,
    "ml_incident_members": "cityHash64(model_name, incident_id)",  # an incident on one shard
    "ml_store_settings": "cityHash64(name)",
    # The exporter's tables: a trace's spans and its lookup row on one shard.
    "otel_traces": "cityHash64(TraceId)",
    "otel_traces_trace_id_ts": "cityHash64(TraceId)",
}
"""Each table's sharding key (see the module docstring). A migration creating a table
that is not here is refused: choose its key first."""

RUNNER_TABLES: Final = frozenset({"segwatch_leases"})
"""Tables the migration runner makes on the node it reaches before any migration: a
migration creating one is rendered as written (see the module docstring)."""

CO_LOCATED_VIEWS: Final = frozenset({"ml_labeled_calls"})
"""Views that join tables sharded alike: each shard runs them on its own rows."""


def sharding_key(table: str) -> str:
    """The sharding key of ``table``; a table with none is refused."""
    if table not in SHARDING_KEYS:
        raise ClusterRenderError(
            f"table {table} has no sharding key: add one to "
            "segwatch.clickhouse.cluster.keys.SHARDING_KEYS (the docstring of "
            "segwatch.clickhouse.cluster says how to choose it)"
        )
    return SHARDING_KEYS[table]
