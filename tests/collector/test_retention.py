"""storage.retention: the tables' TTLs, set at store setup only where they differ."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from segwatch.collector.config import ConfigError, parse_config
from segwatch.collector.config.storage import STORAGE_SCHEMA, RetentionConfig
from segwatch.collector.service.collector import Collector
from segwatch.collector.store.retention import (
    RETENTION_TABLES,
    apply_retention,
    distributed_target,
)
from segwatch.collector.store.settings import check_store_settings

_BASE = (
    "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
    "api:\n  endpoint: 127.0.0.1:0\nscheduler:\n  enabled: false\n"
)


def _retention(**keys: str) -> str:
    lines = "".join(f"    {key}: {value}\n" for key, value in keys.items())
    return f"storage:\n  retention:\n{lines}"


def _ttl(client, table: str) -> str:  # type: ignore[no-untyped-def]
    """The table's TTL clause as the engine reports it ("" without one)."""
    (engine_full,) = client.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name = {t:String}",
        parameters={"t": table},
    ).first_row
    _, found, rest = engine_full.partition(" TTL ")
    return rest.partition(" SETTINGS ")[0] if found else ""


def _alterations(client) -> tuple:  # type: ignore[no-untyped-def, type-arg]
    """What a change of the tables would leave behind: mutations, metadata times."""
    mutations = client.query("SELECT count() FROM system.mutations").first_row[0]
    times = client.query(
        "SELECT groupArray((name, metadata_modification_time)) FROM "
        "(SELECT name, metadata_modification_time FROM system.tables "
        "WHERE database = currentDatabase() ORDER BY name)"
    ).first_row[0]
    return mutations, times


def test_a_retention_sets_the_tables_ttl_and_rows_expire(client) -> None:  # type: ignore[no-untyped-def]
    config = parse_config(
        _retention(raw_calls="7d", labels="180d", aggregates="400d", anomalies="2160h")
    )
    check_store_settings(client, config)  # what store setup runs
    assert _ttl(client, "ml_model_calls") == "toDateTime(timestamp) + toIntervalDay(7)"
    assert _ttl(client, "ml_labels") == "toDateTime(timestamp) + toIntervalDay(180)"
    for table in ("ml_segment_aggregates", "ml_segment_rollup_5m", "ml_segment_rollup_1h"):
        assert _ttl(client, table) == "bucket_start + toIntervalDay(400)"
    for table in ("ml_anomalies", "ml_anomaly_events"):
        assert _ttl(client, table) == "window_end + toIntervalDay(90)"  # 2160h, in days
    client.command(
        "INSERT INTO ml_model_calls (timestamp, model_name, prediction_id) VALUES "
        "(now64(9) - toIntervalDay(8), 'm', 'old'), (now64(9) - toIntervalDay(6), 'm', 'new')"
    )
    client.command("OPTIMIZE TABLE ml_model_calls FINAL")
    kept = client.query("SELECT prediction_id FROM ml_model_calls").result_rows
    assert kept == [("new",)]


def test_running_setup_again_changes_nothing(client) -> None:  # type: ignore[no-untyped-def]
    config = parse_config(_retention(raw_calls="14d", aggregates="400d"))
    check_store_settings(client, config)
    before = _alterations(client)
    assert apply_retention(client, config.storage.retention) == []
    check_store_settings(client, config)
    assert _alterations(client) == before


def test_the_migrations_ttl_in_other_units_is_no_change(client) -> None:  # type: ignore[no-untyped-def]
    """0002 wrote ``INTERVAL 30 DAY``; 30d and 720h are the same retention."""
    before = _alterations(client)
    for value in ("30d", "720h", "43200m"):
        retention = parse_config(_retention(raw_calls=value)).storage.retention
        assert apply_retention(client, retention) == []
    assert apply_retention(client, RetentionConfig()) == []  # no key: nothing touched
    assert _ttl(client, "ml_model_calls") == "toDateTime(timestamp) + toIntervalDay(30)"
    assert _alterations(client) == before


def test_forever_removes_the_ttl(client) -> None:  # type: ignore[no-untyped-def]
    retention = parse_config(_retention(raw_calls="forever")).storage.retention
    assert apply_retention(client, retention) == ["ALTER TABLE ml_model_calls REMOVE TTL"]
    assert _ttl(client, "ml_model_calls") == ""
    assert apply_retention(client, retention) == []
    retention = parse_config(_retention(raw_calls="36h")).storage.retention
    assert apply_retention(client, retention) == [
        "ALTER TABLE ml_model_calls MODIFY TTL toDateTime(timestamp) + toIntervalHour(36)"
    ]


def test_a_collector_applies_its_retention_at_start(tmp_path: Path) -> None:
    store = tmp_path / "store"
    text = f"storage:\n  dsn: chdb://{store}\n  retention:\n    aggregates: 400d\n" + _BASE
    collector = Collector(parse_config(text))
    collector.start()
    try:
        ttl = _ttl(collector._clients.api, "ml_segment_aggregates")  # type: ignore[union-attr]
    finally:
        collector.shutdown()
    assert ttl == "bucket_start + toIntervalDay(400)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("30", "must be a duration with its unit"),
        ("0d", "must be a duration with its unit"),
        ("30 days", "must be a duration with its unit"),
        ("never", "must be a duration with its unit"),
        ("30m", "shorter than an hour"),
        ("true", "must be a string or an integer"),
        ("[30d]", "must be a string or an integer"),
    ],
)
def test_a_bad_retention_is_refused_naming_its_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config("storage:\n  retention:\n    aggregates: 400d\n    raw_calls: " + value)
    (problem,) = refused.value.problems
    assert problem.startswith("storage.retention.raw_calls (line 4): ")
    assert message in problem


def test_an_unknown_retention_key_is_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError, match=r"storage\.retention\.raw_call .*'raw_calls'"):
        parse_config(_retention(raw_call="30d"))


def test_every_retention_key_names_existing_tables_and_times(client) -> None:  # type: ignore[no-untyped-def]
    schema_keys = set(STORAGE_SCHEMA.fields["retention"].fields)  # type: ignore[union-attr]
    config_keys = {f.name for f in dataclasses.fields(RetentionConfig)}
    assert schema_keys == config_keys == set(RETENTION_TABLES)
    columns = set(
        client.query(
            "SELECT table, name FROM system.columns WHERE database = currentDatabase()"
        ).result_rows
    )
    for tables in RETENTION_TABLES.values():
        for table, aged_by in tables:
            column = aged_by.removeprefix("toDateTime(").removesuffix(")")
            assert (table, column) in columns


def test_a_distributed_table_is_aged_through_its_local_table() -> None:
    """The engine here has no cluster: the Distributed engine is read as a server prints it."""
    printed = (
        "Distributed('segwatch_cluster', 'segwatch', 'ml_model_calls_local', "
        "cityHash64(model_name, if(prediction_id = '', span_id, prediction_id)))"
    )
    assert distributed_target(printed) == ("segwatch_cluster", "ml_model_calls_local")
    assert distributed_target("Distributed(c1, currentDatabase(), t_local)") == ("c1", "t_local")
    with pytest.raises(ValueError, match="cluster name"):
        distributed_target("Distributed('prod-eu', 'segwatch', 't_local')")
