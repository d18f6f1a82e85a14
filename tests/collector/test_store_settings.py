"""Histogram accuracy is configurable, and one store never mixes two accuracies."""

from __future__ import annotations

from pathlib import Path

import pytest

from segwatch.collector.config import ConfigError, parse_config
from segwatch.collector.service.collector import Collector
from segwatch.collector.store.settings import (
    RAW_CALL_MERGE_BASE,
    RAW_CALL_MERGE_SETTINGS,
    StoreSettingsError,
    check_store_settings,
)

_BASE = (
    "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
    "api:\n  endpoint: 127.0.0.1:0\nscheduler:\n  enabled: false\n"
)


def _config(store: Path, accuracy: float | None) -> str:
    line = f"  histogram_accuracy: {accuracy}\n" if accuracy is not None else ""
    return f"storage:\n  dsn: chdb://{store}\n{line}" + _BASE


def test_a_store_keeps_the_accuracy_it_was_written_with(tmp_path: Path, recorder) -> None:  # type: ignore[no-untyped-def]
    from segwatch.instrumentation import monitor

    coarse = Collector(parse_config(_config(tmp_path / "s", 0.05)))
    coarse.start()
    try:
        assert coarse.processor is not None
        with monitor("m", tracer_provider=recorder.provider).call() as call:
            call.features(x=123.0)
        coarse.processor.consume(recorder.request())
        coarse.flush()
        keys = coarse._clients.api.query(  # type: ignore[union-attr]
            "SELECT mapKeys(histogram) FROM ml_segment_aggregates "
            "WHERE segment_dim = '__all__' AND quantity = 'feature.x'"
        ).result_rows
    finally:
        coarse.shutdown()
    # 123 at 5 %: ceil(ln 123 / ln(1.05 / 0.95)) + 16384 (at the default 1 % it would be 16625).
    assert keys == [([16433],)]
    default = Collector(parse_config(_config(tmp_path / "s", None)))
    with pytest.raises(StoreSettingsError, match=r"written with 0\.05"):
        default.start()


def test_an_accuracy_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="histogram_accuracy"):
        parse_config("storage:\n  histogram_accuracy: 0.5\n")


def _raw_call_table_settings(client) -> str:  # type: ignore[no-untyped-def]
    """The SETTINGS clause of ``ml_model_calls``' definition, as ``name = value, ...``."""
    query = client.query(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name = 'ml_model_calls'"
    ).result_rows[0][0]
    return str(query).split(" SETTINGS ", 1)[1].split(" COMMENT ", 1)[0]


def test_an_embedded_store_merges_raw_call_parts_wider_and_vertically_once_set(
    client, store_dsn
) -> None:  # type: ignore[no-untyped-def]
    """The engine's merges run in the collector there: ``ml_model_calls`` gets a wider merge
    base and vertical merges at setup, once (the next setup finds them set), and keeps its
    other settings."""
    before = _raw_call_table_settings(client)
    assert "merge_selector_base" not in before  # the migrations leave the defaults
    assert "vertical_merge" not in before
    config = parse_config(f"storage:\n  dsn: {store_dsn}\n")
    check_store_settings(client, config)
    check_store_settings(client, config)
    settings = _raw_call_table_settings(client)
    for name, value in RAW_CALL_MERGE_SETTINGS.items():
        assert settings.count(f"{name} = ") == 1
        assert f"{name} = {value}," in f"{settings},"  # = 1, not = 131072's prefix
    assert f"merge_selector_base = {RAW_CALL_MERGE_BASE}" in settings
    assert "non_replicated_deduplication_window = 10000" in settings  # deduplication kept


def test_a_store_set_up_before_vertical_merges_gets_them(client, store_dsn) -> None:  # type: ignore[no-untyped-def]
    """A store an earlier version set up (the merge base only) gains what it lacks, and
    a setting the store has otherwise (131072, not 1) is set again."""
    client.command(
        "ALTER TABLE ml_model_calls MODIFY SETTING merge_selector_base = 10, "
        "vertical_merge_algorithm_min_rows_to_activate = 131072"
    )
    check_store_settings(client, parse_config(f"storage:\n  dsn: {store_dsn}\n"))
    settings = _raw_call_table_settings(client)
    assert "vertical_merge_algorithm_min_rows_to_activate = 1," in f"{settings},"
    assert "vertical_merge_algorithm_min_columns_to_activate = 1," in f"{settings},"
    assert settings.count("merge_selector_base") == 1


def test_vertical_merges_keep_every_raw_call_row_as_it_was(client, store_dsn) -> None:  # type: ignore[no-untyped-def]
    """Parts of raw calls merged vertically (the sorting key first, then each column
    gathered alone) hold the same rows, maps included, as before the merge.

    The engine merges vertically only into a wide part: these few rows would make a
    compact one (under ``min_bytes_for_wide_part``), merged horizontally whatever the
    settings, so the test makes every part wide; the engine's ``GatheredColumns`` counter
    (columns gathered alone, the vertical stage) says the merge was vertical."""
    check_store_settings(client, parse_config(f"storage:\n  dsn: {store_dsn}\n"))
    client.command("ALTER TABLE ml_model_calls MODIFY SETTING min_bytes_for_wide_part = 0")
    for part in range(3):  # overlapping timestamps: the merge interleaves the parts' rows
        client.command(
            "INSERT INTO ml_model_calls (timestamp, trace_id, span_id, model_name, model_stage, "
            "numbers, strings) SELECT toStartOfHour(now64(9, 'UTC')) + "
            "toIntervalMillisecond(number * 3 + {p:UInt8}), hex(number), toString({p:UInt8}), "
            "if(number % 2, 'a', 'b'), 'serving', "
            "map('feature.x', number / 7, concat('output.', toString(number % 5)), {p:UInt8}), "
            "map('feature.c', toString(number % 11)) FROM numbers(5000)",
            parameters={"p": part},
        )
    checksum = (
        "SELECT count(), sum(cityHash64(timestamp, trace_id, span_id, model_name, "
        "toString(numbers), toString(strings))) FROM ml_model_calls"
    )
    before = client.query(checksum).result_rows[0]
    # The engine's counter, process-wide: only this test merges in this process now.
    gathered = "SELECT sum(value) FROM system.events WHERE event = 'GatheredColumns'"
    gathered_before = int(client.query(gathered).result_rows[0][0] or 0)
    client.command("OPTIMIZE TABLE ml_model_calls FINAL")
    assert int(client.query(gathered).result_rows[0][0] or 0) > gathered_before
    parts = client.query(
        "SELECT count() FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'ml_model_calls' AND active"
    ).result_rows[0][0]
    assert parts == 1
    assert client.query(checksum).result_rows[0] == before
    assert before[0] == 15000
