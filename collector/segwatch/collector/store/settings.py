"""Store-wide settings every collector writing to one store must share.

Only one so far: the histograms' relative accuracy. Keys of different
accuracies mean different value ranges, so mixing them would silently corrupt
every merged histogram; the first writer records its accuracy in
``ml_store_settings`` and a writer configured otherwise is refused.
"""

from __future__ import annotations

import math

from clickhouse_connect.driver.client import Client

from segwatch.collector.config.collector_config import CollectorConfig

__all__ = ["StoreSettingsError", "check_store_settings"]


class StoreSettingsError(ValueError):
    """The config disagrees with what the store was written with."""


def check_store_settings(client: Client, config: CollectorConfig) -> None:
    """Record the config's store-wide settings, or refuse if the store has others."""
    wanted = config.storage.histogram_accuracy
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
