"""Flushes that fail halfway are retried whole, under the same token: counted once.

The store here is the real embedded engine behind a fault-injecting wrapper
(the only way to make one insert of a flush fail and the next succeed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from store_faults import FailOnce, Hung, Outage
from waiting import wait_until

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config import SpoolConfig
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.durable.call_buffer import CallBuffer
from segwatch.collector.durable.processor import ModelCallProcessor, spool_payload
from segwatch.collector.durable.spool import TRACES, Spool
from segwatch.collector.errors import RetryableError
from segwatch.collector.model_calls import ModelCallBatch
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import monitor


def _spooled_processor(
    client: Any, tmp_path: Path, *, max_bytes: int, flush_interval: float
) -> tuple[ModelCallProcessor, ClickHouseExporter, Spool]:
    """A started processor on a fresh spool in ``tmp_path``, writing through ``client``."""
    exporter = ClickHouseExporter(client)
    exporter.start()
    spool = Spool(tmp_path / "spool", max_bytes=max_bytes)
    spool.open()
    processor = ModelCallProcessor(
        SegmentAggregator(), exporter, spool=spool,
        flushing=SpoolConfig(flush_interval=flush_interval),
    )  # fmt: skip
    processor.start()
    return processor, exporter, spool


def test_a_flush_that_failed_after_one_table_is_not_counted_twice(
    tmp_path: Path, client, recorder
) -> None:  # type: ignore[no-untyped-def]
    faulty = FailOnce(client, "ml_model_calls")  # aggregates land, raw calls fail
    processor, exporter, spool = _spooled_processor(
        faulty, tmp_path, max_bytes=1 << 20, flush_interval=0.05
    )
    try:
        model = monitor("m", tracer_provider=recorder.provider)
        for _ in range(2):
            for i in range(20):
                with model.call() as call:
                    call.features(x=float(i))
            request = recorder.request()
            assert len(decode_request(request)) == 20
            processor.consume(request)
            # The second request arrives while the first flush waits for its retry:
            # the retry must still be that flush alone, or its token would change.
            wait_until(lambda: faulty.failed == 1)
        processor.flush(timeout=30)
    finally:
        processor.shutdown()
        exporter.shutdown()
        spool.close()
    assert faulty.failed == 1
    calls = client.query("SELECT count() FROM ml_model_calls").result_rows
    totals = client.query(
        "SELECT sum(count) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.x'"
    ).result_rows
    assert calls == [(40,)] and totals == [(40.0,)]


def test_a_large_spool_is_replayed_within_the_pending_limit(
    tmp_path: Path, client, recorder
) -> None:  # type: ignore[no-untyped-def]
    model = monitor("m", tracer_provider=recorder.provider)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 24)
    spool.open()
    for _ in range(10):  # ten acknowledged requests the store never got
        for i in range(20):
            with model.call() as call:
                call.features(x=float(i))
        spool.sync(spool.write(TRACES, spool_payload(recorder.request().SerializeToString())))
    spool.close()

    exporter = ClickHouseExporter(client)
    exporter.start()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 24)
    flushing = SpoolConfig(flush_calls=40, max_pending_calls=50)
    processor = ModelCallProcessor(SegmentAggregator(), exporter, spool=spool, flushing=flushing)
    processor.start()
    try:
        replayed = processor.replay(*spool.open())
        processor.flush(timeout=30)
    finally:
        processor.shutdown()
        exporter.shutdown()
        spool.close()
    assert replayed == 200
    assert processor.buffer.peak_pending_calls <= 50  # never the whole spool in memory
    assert client.query("SELECT count() FROM ml_model_calls").result_rows == [(200,)]


def test_a_replay_refuses_what_was_refused_as_too_late(tmp_path: Path, client, recorder) -> None:  # type: ignore[no-untyped-def]
    """The replay judges lateness against the limit the request was accepted under."""
    now = 1_800_000_000.0
    model = monitor("m", tracer_provider=recorder.provider)
    for started in (now - 10, now - 7200):  # on time, and two hours late (limit: one hour)
        at = int(started * 1e9)
        with model.call(start_time=at, end_time=at + 1000) as call:
            call.features(x=1.0)
    exporter = ClickHouseExporter(client)
    exporter.start()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 24)
    spool.open()
    first = ModelCallProcessor(SegmentAggregator(), exporter, spool=spool,
                               flushing=SpoolConfig(flush_interval=60),
                               allowed_lateness=3600, clock=lambda: now)  # fmt: skip
    first.start()
    try:
        result = first.consume(recorder.request())
        spool.close()  # as if it died before its first flush
        assert (result.accepted, result.rejected) == (1, 1)
        again = Spool(tmp_path / "spool", max_bytes=1 << 24)
        second = ModelCallProcessor(SegmentAggregator(), exporter, spool=again,
                                    clock=lambda: now + 86_400)  # fmt: skip
        replayed = second.replay(*again.open())  # a day later: no lateness check would take both
        again.close()
    finally:
        first.shutdown()
        exporter.shutdown()
    assert replayed == 1


def test_a_store_outage_spills_past_the_memory_bound_then_everything_lands_once(
    tmp_path: Path, client, recorder
) -> None:  # type: ignore[no-untyped-def]
    store = Outage(client)
    exporter = ClickHouseExporter(store)  # type: ignore[arg-type]
    exporter.start()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 24)
    spool.open()
    flushing = SpoolConfig(flush_interval=0.05, flush_calls=20, max_pending_calls=50)
    processor = ModelCallProcessor(SegmentAggregator(), exporter, spool=spool, flushing=flushing,
                                   backpressure_timeout=0.5)  # fmt: skip
    processor.start()
    model = monitor("m", tracer_provider=recorder.provider)

    def request() -> Any:
        for i in range(20):
            with model.call() as call:
                call.features(x=float(i))
        return recorder.request()

    try:
        accepted = 0
        for _ in range(6):  # the spool has room: all acknowledged, the later ones spilled
            processor.consume(request())
            accepted += 1
        assert processor.buffer.peak_pending_calls <= 60  # bounded while the store is down
        assert processor.buffer.pending_calls <= 60 < spool.unflushed_bytes // 100
        assert client.query("SELECT count() FROM ml_model_calls").result_rows == [(0,)]
        store.down = False  # the store is back: the retries land everything accepted
        processor.flush(timeout=60)
        assert processor.buffer.spilled_records >= 3  # read back from the spool, in order
    finally:
        processor.shutdown()
        exporter.shutdown()
        spool.close()
    assert client.query("SELECT count() FROM ml_model_calls").result_rows == [(20 * accepted,)]
    assert client.query(
        "SELECT sum(count) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.x'"
    ).result_rows == [(20.0 * accepted,)]


def test_flush_returns_under_steady_load(tmp_path: Path, client) -> None:  # type: ignore[no-untyped-def]
    """What was added before flush() is stored; calls arriving meanwhile do not hold it up."""
    import threading

    processor, exporter, spool = _spooled_processor(
        client, tmp_path, max_bytes=1 << 30, flush_interval=0.2
    )
    stop = threading.Event()
    one = ModelCallBatch(models=[("m", "", "serving")], model_index=[0], start_ns=[1],
                         duration_ns=[1], trace_ids=[b"\x01" * 16], span_ids=[b"\x02" * 8],
                         operations=[""], prediction_ids=[""], service_names=[""],
                         weights=[1.0])  # fmt: skip

    def load() -> None:
        while not stop.is_set():  # a steady trickle: the buffer is never empty for long
            end = spool.write(1, b"x")
            processor.buffer.add(one, end, 10)
            spool.sync(end)
            stop.wait(0.001)

    sender = threading.Thread(target=load)
    sender.start()
    try:
        time.sleep(0.3)
        before = processor.buffer._added
        started = time.monotonic()
        processor.flush(timeout=20)
        waited = time.monotonic() - started
        assert processor.buffer._stored >= before
    finally:
        stop.set()
        sender.join()
        processor.shutdown()
        exporter.shutdown()
        spool.close()
    assert waited < 20


def _calls(n: int) -> ModelCallBatch:
    """``n`` calls of one model (what the buffer counts; never flushed here)."""
    return ModelCallBatch(models=[("m", "", "serving")], model_index=[0] * n, start_ns=[1] * n,
                          duration_ns=[1] * n, trace_ids=[b"\x01" * 16] * n,
                          span_ids=[b"\x02" * 8] * n, operations=[""] * n,
                          prediction_ids=[""] * n, service_names=[""] * n,
                          weights=[1.0] * n)  # fmt: skip


def test_reserved_room_is_held_for_its_batch(client: Any) -> None:
    """Two requests that wait for room cannot both take the same room: the second is refused
    (or, with a spool, spills) instead of both passing and one spilling after decoding."""
    # No flusher is started: nothing leaves the buffer.
    buffer = CallBuffer(
        SegmentAggregator(), ClickHouseExporter(client), max_flush_calls=100, max_pending_calls=100
    )
    buffer.add(_calls(60))
    assert buffer.reserve(40, timeout=0)
    with pytest.raises(RetryableError):
        buffer.reserve(40, timeout=0)  # the room left is held for the first
    buffer.release(40)  # that request failed before its add
    assert buffer.reserve(40, timeout=0)
    buffer.add(_calls(40), reserved=True)
    assert buffer.pending_calls == 100
    with pytest.raises(RetryableError):
        buffer.reserve(1, timeout=0)


def test_a_batch_with_reserved_room_is_not_spilled(tmp_path: Path, client: Any) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 24)
    spool.open()
    buffer = CallBuffer(SegmentAggregator(), ClickHouseExporter(client), spool,
                        max_flush_calls=100, max_pending_calls=100,
                        reload=lambda record: None)  # fmt: skip
    try:
        buffer.add(_calls(60), spool.write(TRACES, b"a"))
        first = buffer.reserve(40, timeout=0)
        second = buffer.reserve(40, timeout=0)  # no room: its add will spill
        assert (first, second) == (True, False)
        buffer.add(_calls(40), spool.write(TRACES, b"b"), reserved=first)
        assert not buffer.spilling and buffer.pending_calls == 100
        buffer.add(_calls(40), spool.write(TRACES, b"c"), reserved=second)
        assert buffer.spilling and buffer.pending_calls == 100
    finally:
        spool.close()


@pytest.mark.parametrize(
    ("first", "flush_calls", "later", "kept"),
    [
        (20, 20, 4, 1),  # room for one request beside the flush; the rest wait, then spill
        (50, 50, 2, 0),  # a whole bound in flight, nothing pending: no room for any
    ],
)
def test_the_memory_bound_counts_the_flush_being_written(
    tmp_path: Path, client: Any, recorder: Any, first: int, flush_calls: int, later: int,
    kept: int,
) -> None:  # fmt: skip
    """A flush in flight is still in memory, and comes back whole if it fails: the calls
    admitted beside it must leave room for it (else a failed flush puts the buffer a
    whole flush over its bound, as a CI run of the outage test once saw)."""
    store = Hung(client)  # the first flush's insert hangs, then fails: the store is down
    exporter = ClickHouseExporter(store)  # type: ignore[arg-type]
    exporter.start()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 24)
    spool.open()
    flushing = SpoolConfig(flush_interval=0.05, flush_calls=flush_calls, max_pending_calls=50)
    processor = ModelCallProcessor(SegmentAggregator(), exporter, spool=spool, flushing=flushing,
                                   backpressure_timeout=0.3)  # fmt: skip
    processor.start()
    model = monitor("m", tracer_provider=recorder.provider)

    def request(calls: int) -> Any:
        for i in range(calls):
            with model.call() as call:
                call.features(x=float(i))
        return recorder.request()

    try:
        processor.consume(request(first))
        assert store.hung.wait(30)  # its flush is in flight
        for _ in range(later):
            processor.consume(request(20))
        assert processor.buffer.spilling
        assert processor.buffer.held_calls == first + 20 * kept
        store.release()  # the hung insert fails: the flush's calls are pending again
        wait_until(lambda: processor.buffer.store_failing)  # set as its calls came back
        # 60 and 90 when the flush was not counted
        assert processor.buffer.pending_calls == first + 20 * kept <= 50
        assert processor.buffer.peak_pending_calls <= 50
        store.down = False
        processor.flush(timeout=60)
    finally:
        store.release()  # (a failed assertion above must not leave the insert hanging)
        processor.shutdown()
        exporter.shutdown()
        spool.close()
    # Reading spilled calls back may pass the bound by the one request that fills the room.
    assert processor.buffer.peak_pending_calls <= 50 + 20
    expected = first + 20 * later
    assert client.query("SELECT count() FROM ml_model_calls").result_rows == [(expected,)]
