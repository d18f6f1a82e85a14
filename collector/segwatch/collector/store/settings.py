"""Store-wide settings every collector writing to one store must share, checked at setup.

The histograms' relative accuracy: keys of different accuracies mean different
value ranges, so mixing them would silently corrupt every merged histogram; the
first writer records its accuracy in ``ml_store_settings`` and a writer
configured otherwise is refused. Then the retention (``storage.retention``,
:mod:`.retention`): the tables' TTLs are set to the config's where they differ.
And with ``storage.traces.write``, that ``otel_traces`` has every column the
collector writes: an OpenTelemetry Collector's exporter may have made the table
first (the migration then leaves it), in a version whose columns differ.

In an embedded store the engine's merges run in the collector's process, and
merging the one ``ml_model_calls`` part each flush writes cost more CPU than
inserting it: that table gets :data:`RAW_CALL_MERGE_SETTINGS`. It merges its parts
:data:`RAW_CALL_MERGE_BASE` at a time (``merge_selector_base``; ClickHouse's
default is 5: wider merges rewrite each row fewer times, for more active parts),
and vertically, whatever the merge's row count: the sorting key's columns are
merged first, then every other column is gathered alone in that order, so a merge
holds one column's buffers of each part at a time, not every column's (ClickHouse
merges so only tables with 11 columns outside the key and merges of 131,072 rows
or more; this one has 8; README, Benchmarks: ``bench/ingest.py``). A merge whose
result is a compact part (under ``min_bytes_for_wide_part``) stays horizontal,
whatever these say: only the larger merges, which hold the most, go vertical. A
ClickHouse server's merges are its operator's to tune: a store there keeps the
defaults.
"""

from __future__ import annotations

import math
import re

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.store import parse_dsn
from segwatch.collector.config.collector_config import CollectorConfig

from .retention import apply_retention
from .trace_rows import TRACE_SCHEMA

__all__ = [
    "RAW_CALL_MERGE_BASE",
    "RAW_CALL_MERGE_SETTINGS",
    "StoreSettingsError",
    "check_store_settings",
]

RAW_CALL_MERGE_BASE = 10
"""``ml_model_calls``' ``merge_selector_base`` in an embedded store."""

RAW_CALL_MERGE_SETTINGS = {
    "merge_selector_base": RAW_CALL_MERGE_BASE,
    "vertical_merge_algorithm_min_columns_to_activate": 1,
    "vertical_merge_algorithm_min_rows_to_activate": 1,
}
"""``ml_model_calls``' merge settings in an embedded store (MergeTree settings)."""


class StoreSettingsError(ValueError):
    """The config disagrees with what the store was written with."""


def check_store_settings(client: Client, config: CollectorConfig) -> None:
    """Record the config's store-wide settings, or refuse if the store has others; then
    give the tables the config's retention."""
    _check_histogram_accuracy(client, config.storage.histogram_accuracy)
    apply_retention(client, config.storage.retention)
    if config.storage.traces.write:
        _check_traces_table(client)
    if parse_dsn(config.storage.dsn).embedded:
        _set_raw_call_merges(client)


def _set_raw_call_merges(client: Client) -> None:
    """Give ``ml_model_calls`` the :data:`RAW_CALL_MERGE_SETTINGS` it lacks (a settings
    change: no part is rewritten; merges follow it from now on)."""
    rows = client.query(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name = 'ml_model_calls'"
    ).result_rows
    if not rows:
        return

    table_settings = dict(
        re.findall(r"(\w+) = ([^,\s]+)", str(rows[0][0]).rsplit(" SETTINGS ", 1)[-1])
    )
    missing = [f"{name} = {value}" for name, value in RAW_CALL_MERGE_SETTINGS.items()
               if table_settings.get(name) != str(value)]  # fmt: skip
    if missing:
        client.command(f"ALTER TABLE ml_model_calls MODIFY SETTING {', '.join(missing)}")


def _check_traces_table(client: Client) -> None:
    rows = client.query(
        "SELECT name, type FROM system.columns "
        "WHERE database = currentDatabase() AND table = 'otel_traces'"
    ).result_rows
    found = {str(name): str(kind) for name, kind in rows}
    wrong = [f"{name} {kind}" for name, kind in TRACE_SCHEMA.items() if found.get(name) != kind]
    if wrong:
        raise StoreSettingsError(
            f"otel_traces in this store lacks the columns segwatch writes ({', '.join(wrong)}): "
            "another writer (an OpenTelemetry Collector's clickhouseexporter?) made it "
            "otherwise; set storage.traces.write: false to leave it to that writer"
        )


def _check_histogram_accuracy(client: Client, wanted: float) -> None:
    rows = client.query(
        "SELECT argMax(value, set_at) FROM ml_store_settings WHERE name = 'histogram_accuracy'"
        " HAVING count() > 0"
    ).result_rows
    if not rows:
        client.command(
            "INSERT INTO ml_store_settings (name, value) VALUES ('histogram_accuracy', {v:String})",
            parameters={"v": repr(float(wanted))},
        )
        return
    stored = float(rows[0][0])
    if not math.isclose(stored, wanted, rel_tol=1e-9):
        raise StoreSettingsError(
            f"storage.histogram_accuracy is {wanted} but this store's histograms were written "
            f"with {stored}; histograms of different accuracies cannot be merged: use {stored} "
            "or a new store"
        )
