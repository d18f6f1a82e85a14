"""Calls that land after their bucket's roll-up settled reach the detectors: the flush
that wrote them marks their bucket late, and the next roll-up of it is made again.

Real clock, real collector flush (processor, spool, exporter) and the embedded engine:
the late calls are sent with start times a quarter of an hour back, as a store
outage's spooled backlog or an SDK's retries bring them.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from store_faults import RefusesData

from segwatch.clickhouse.rollups import FIVE_MINUTES, LATE_AFTER, roll_up
from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config import SpoolConfig
from segwatch.collector.durable.processor import ModelCallProcessor
from segwatch.collector.durable.spool import Spool
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import monitor


def _send(processor: ModelCallProcessor, recorder: Any, starts: list[int]) -> None:
    """One request of calls starting at ``starts`` (epoch seconds), then a flush."""
    model = monitor("late", version="1", tracer_provider=recorder.provider)
    for at in starts:
        with model.call(start_time=at * 10**9, end_time=at * 10**9 + 1000) as call:
            call.features(amount=float(at % 100))
    processor.consume(recorder.request())
    processor.flush(timeout=30)


def _rolled_calls(client: Any, bucket: int) -> float:
    return float(client.query(
        f"SELECT sum(count) FROM {FIVE_MINUTES.table} FINAL WHERE segment_dim = '__all__' "
        "AND quantity = 'feature.amount' AND bucket_start = {b:DateTime('UTC')}",
        parameters={"b": dt.datetime.fromtimestamp(bucket, dt.timezone.utc)},
    ).result_rows[0][0])  # fmt: skip


def test_calls_landing_after_their_bucket_settled_are_rolled_up(
    client: Any, recorder: Any, tmp_path: Path
) -> None:
    exporter = ClickHouseExporter(client)
    exporter.start()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 24)
    spool.open()
    processor = ModelCallProcessor(SegmentAggregator(), exporter, spool=spool,
                                   flushing=SpoolConfig(flush_interval=0.05))  # fmt: skip
    processor.start()
    now = int(time.time())
    bucket = now // 300 * 300 - 900  # ended ten minutes ago or more: settled
    start, end = (dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in (bucket, bucket + 300))
    try:
        _send(processor, recorder, [bucket + 10, bucket + 20])
        assert roll_up(client, FIVE_MINUTES, start, end) == 1  # a detector run read it
        assert _rolled_calls(client, bucket) == 2
        before = time.time()
        _send(processor, recorder, [bucket + 30, bucket + 40, bucket + 50])  # late
        _send(processor, recorder, [now - 1])  # on time: marks nothing
    finally:
        processor.shutdown()
        exporter.shutdown()
        spool.close()
    # The late flushes marked the bucket (the first before the roll-up: a later mark
    # replaces it), the on-time one nothing.
    marks = client.query(
        "SELECT toUInt32(bucket_start), max(marked_at) FROM ml_late_buckets GROUP BY 1"
    ).result_rows
    assert [m[0] for m in marks] == [bucket]
    assert marks[0][1].replace(tzinfo=dt.timezone.utc).timestamp() >= before  # once they landed
    # A run past the margin after the mark (LATE_AFTER: a roll-up sooner is made again).
    run = dt.datetime.fromtimestamp(time.time() + LATE_AFTER + 1, dt.timezone.utc)
    assert roll_up(client, FIVE_MINUTES, start, end, now=run) == 1  # the late calls count
    assert _rolled_calls(client, bucket) == 5
    assert roll_up(client, FIVE_MINUTES, start, end, now=run) == 0  # once


def test_a_mark_the_store_refuses_fails_no_flush_and_goes_with_the_next(
    client: Any, recorder: Any, tmp_path: Path
) -> None:
    """The flush's rows are stored before its marks: a refused mark must not make them a
    dead letter (or a retry); it is sent again with the next flush's, keeping its time."""
    store = RefusesData(client, "ml_late_buckets")
    exporter = ClickHouseExporter(store)  # type: ignore[arg-type]
    exporter.start()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 24)
    spool.open()
    processor = ModelCallProcessor(SegmentAggregator(), exporter, spool=spool,
                                   flushing=SpoolConfig(flush_interval=0.05,
                                                        max_flush_attempts=1))  # fmt: skip
    processor.start()
    now = int(time.time())
    bucket = now // 300 * 300 - 900
    try:
        before = time.time()
        _send(processor, recorder, [bucket + 10, bucket + 20])  # late: its mark is refused
        assert store.refused == 1
        store.refusing = False
        _send(processor, recorder, [now - 1])  # on time: nothing of its own to mark
    finally:
        processor.shutdown()
        exporter.shutdown()
        spool.close()
    assert (processor.buffer.failures, processor.buffer.dead_letters) == (0, 0)
    assert client.query("SELECT count() FROM ml_model_calls").result_rows == [(3,)]
    marks = client.query(
        "SELECT toUInt32(bucket_start), marked_at FROM ml_late_buckets"
    ).result_rows
    assert [m[0] for m in marks] == [bucket]
    landed = marks[0][1].replace(tzinfo=dt.timezone.utc).timestamp()
    assert before <= landed <= time.time()
