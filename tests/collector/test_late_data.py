"""Late data lands in its own minute and merges; data older than the allowed lateness is refused."""

from __future__ import annotations

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.durable.processor import ModelCallProcessor
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import monitor

NOW = 1_800_000_000.0  # the processor's clock, in seconds
MINUTE_NS = 60 * 10**9


def _request(recorder, minutes_ago: list[float]):  # type: ignore[no-untyped-def]
    model = monitor("m", tracer_provider=recorder.provider)
    for ago in minutes_ago:
        at = int(NOW * 1e9 - ago * MINUTE_NS)
        with model.call(start_time=at, end_time=at + 1) as call:
            call.features(x=1.0)
    return recorder.request()


def test_late_rows_merge_into_their_minute_and_too_late_ones_are_refused(client, recorder) -> None:
    exporter = ClickHouseExporter(client)
    exporter.start()
    processor = ModelCallProcessor(
        SegmentAggregator(), exporter, allowed_lateness=3600, clock=lambda: NOW
    )
    processor.start()
    try:
        on_time = processor.consume(_request(recorder, [10.5, 10.2]))
        late = processor.consume(_request(recorder, [10.7, 59.0]))  # same minute, arriving later
        too_late = processor.consume(_request(recorder, [61.0, 5.0]))
    finally:
        processor.shutdown()
        exporter.shutdown()
    assert (on_time.accepted, late.accepted) == (2, 2)
    assert (too_late.accepted, too_late.rejected) == (1, 1)
    assert "allowed lateness" in too_late.message
    client.command("OPTIMIZE TABLE ml_segment_aggregates FINAL")
    minute = int(NOW - 10.5 * 60) // 60 * 60
    rows = client.query(
        "SELECT toUnixTimestamp(bucket_start), count FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.x' ORDER BY bucket_start"
    ).result_rows
    assert (minute, 3.0) in rows  # two on time and one late call, merged into one row
    assert sum(count for _, count in rows) == 5.0  # the 61-minute-old call is not there
