"""Store-wide settings every collector writing to one store must share, checked at setup.

The histograms' relative accuracy: keys of different accuracies mean different
value ranges, so mixing them would silently corrupt every merged histogram; the
first writer records its accuracy in ``ml_store_settings`` and a writer
configured otherwise is refused. Then the retention (``storage.retention``,
:mod:`.retention`): the tables' TTLs are set to the config's where they differ.
And with ``storage.traces.write``, that ``otel_traces`` has every column the
collector writes: an OpenTelemetry Collector's exporter may have made the table
first (the migration then leaves it), in a version whose columns differ.

In an embedded store, ``ml_model_calls`` merges its parts
:data:`RAW_CALL_MERGE_BASE` at a time (``merge_selector_base``; ClickHouse's
default is 5): there the engine's merges run in the collector's process, and
merging the one part each flush writes cost more CPU than inserting it; wider
merges rewrite each row fewer times, for more active parts (README, Benchmarks:
``bench/ingest.py``). A ClickHouse server's merges are its operator's to tune: a
store there keeps the default.
"""

from __future__ import annotations

import math

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.store import parse_dsn
from segwatch.collector.config.collector_config import CollectorConfig

from .retention import apply_retention
from .trace_rows import TRACE_SCHEMA

__all__ = ["RAW_CALL_MERGE_BASE", "StoreSettingsError", "check_store_settings"]

RAW_CALL_MERGE_BASE = 10
"""``ml_model_calls``' ``merge_selector_base`` in an embedded store."""


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
        _merge_raw_calls_wider(client)


def _merge_raw_calls_wider(client: Client) -> None:
    """Give ``ml_model_calls`` its merge base, unless it has it (a settings change: no part
    is rewritten; merges follow it from now on)."""
    rows = client.query(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name = 'ml_model_calls'"
    ).result_rows
    if rows and f"merge_selector_base = {RAW_CALL_MERGE_BASE}" not in str(rows[0][0]):
        client.command(
            f"ALTER TABLE ml_model_calls MODIFY SETTING merge_selector_base = {RAW_CALL_MERGE_BASE}"
        )


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
