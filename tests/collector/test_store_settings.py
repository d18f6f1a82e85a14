"""Histogram accuracy is configurable, and one store never mixes two accuracies."""

from __future__ import annotations

from pathlib import Path

import pytest

from segwatch.collector.config import ConfigError, parse_config
from segwatch.collector.service.collector import Collector
from segwatch.collector.store.settings import (
    RAW_CALL_MERGE_BASE,
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


def test_an_embedded_store_merges_raw_call_parts_wider_once_set(client, store_dsn) -> None:  # type: ignore[no-untyped-def]
    """The engine's merges run in the collector there: ``ml_model_calls`` gets a wider merge
    base at setup, once (the next setup finds it set), and keeps its other settings."""

    def table_settings() -> str:
        query = client.query(
            "SELECT create_table_query FROM system.tables "
            "WHERE database = currentDatabase() AND name = 'ml_model_calls'"
        ).result_rows[0][0]
        return str(query).split(" SETTINGS ", 1)[1]

    assert "merge_selector_base" not in table_settings()  # the migrations leave the default
    config = parse_config(f"storage:\n  dsn: {store_dsn}\n")
    check_store_settings(client, config)
    check_store_settings(client, config)
    settings = table_settings()
    assert settings.count("merge_selector_base") == 1
    assert f"merge_selector_base = {RAW_CALL_MERGE_BASE}" in settings
    assert "non_replicated_deduplication_window = 10000" in settings  # deduplication kept
