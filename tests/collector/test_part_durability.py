"""Inserts fsync their parts before the spool lets a flush go (storage.fsync_parts).

A power loss cannot be staged here; what is checked is that the real engine's
tables carry the MergeTree settings that make an insert return only once its
part is on disk, and that the config turns them off.
"""

from __future__ import annotations

from pathlib import Path

from collector_process import CollectorProcess

from segwatch.collector.store.part_durability import DURABLE_TABLES

SETTINGS = (
    "SELECT name, extract(engine_full, 'fsync_after_insert = (\\\\d)'), "
    "extract(engine_full, 'fsync_part_directory = (\\\\d)') FROM system.tables "
    "WHERE database = currentDatabase() AND name IN {tables} ORDER BY name"
)


def _settings(tmp_path: Path, fsync_parts: str | None) -> list[list[object]]:
    store = tmp_path / "store"
    config = tmp_path / "collector.yaml"
    storage = f"storage:\n  dsn: chdb://{store}\n"
    if fsync_parts is not None:
        storage += f"  fsync_parts: {fsync_parts}\n"
    config.write_text(
        storage + "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        "api:\n  endpoint: 127.0.0.1:0\nscheduler:\n  enabled: false\n"
    )
    collector = CollectorProcess(config, store)
    try:
        return collector.sql(SETTINGS.format(tables=tuple(DURABLE_TABLES)))
    finally:
        assert collector.stop() == 0


def test_the_tables_that_take_acknowledged_data_fsync_their_parts(tmp_path: Path) -> None:
    assert _settings(tmp_path, None) == [[t, "1", "1"] for t in sorted(DURABLE_TABLES)]
    # The same store, reconfigured: the setting follows the config.
    assert _settings(tmp_path, "false") == [[t, "0", "0"] for t in sorted(DURABLE_TABLES)]
