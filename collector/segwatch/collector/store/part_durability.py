"""Durable parts: the store fsyncs a flush's parts before the spool lets the flush go.

The spool marks a flush done once its insert returned, and then releases its
records; if the store still held the new parts only in the page cache, a power
loss would take acknowledged calls with it. ClickHouse fsyncs parts on request
(MergeTree's ``fsync_after_insert`` and ``fsync_part_directory``): with
``storage.fsync_parts`` (the default) the collector sets both on the tables it
inserts into, so an insert returns once its part is on disk. On a replicated
cluster, where a part lives on several machines, turning it off trades that
guarantee for insert speed (``bench/ingest.py --no-fsync-parts`` measures it).
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

__all__ = ["DURABLE_TABLES", "set_part_durability"]

DURABLE_TABLES = ("ml_segment_aggregates", "ml_model_calls", "ml_labels")
"""The tables the collector inserts acknowledged data into (the others are derived)."""


def set_part_durability(client: Client, fsync: bool) -> None:
    """Make inserts into :data:`DURABLE_TABLES` fsync their parts (or stop doing so)."""
    value = int(fsync)
    for table in DURABLE_TABLES:
        client.command(
            f"ALTER TABLE {table} MODIFY SETTING "
            f"fsync_after_insert = {value}, fsync_part_directory = {value}"
        )
