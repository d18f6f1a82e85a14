"""The write-ahead spool: what was synced survives, torn tails are cut, flushed data is released."""

from __future__ import annotations

from pathlib import Path

import pytest

from segwatch.collector.durable.spool import TRACES, Spool, SpoolFullError, SpoolLockedError


def _spool(path: Path, **kwargs) -> Spool:  # type: ignore[no-untyped-def]
    return Spool(path, max_bytes=kwargs.pop("max_bytes", 1 << 20), **kwargs)


def test_synced_records_come_back_after_a_restart(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    records, interrupted = spool.open()
    assert (list(records), interrupted) == ([], None)
    ends = [spool.write(TRACES, f"request {i}".encode()) for i in range(3)]
    spool.sync(ends[-1])
    spool.close()  # as after a crash: nothing was flushed
    again = _spool(tmp_path)
    found, interrupted = again.open()
    records = list(found)
    assert [r.payload for r in records] == [b"request 0", b"request 1", b"request 2"]
    assert [r.end for r in records] == ends and interrupted is None
    again.close()


def test_a_reader_reads_a_records_body_from_disk_in_any_segment(tmp_path: Path) -> None:
    """What a pending batch reads back at its flush: slices of a request it did not keep,
    from the record's segment, wherever a rotation put it; nothing outside the body."""
    spool = _spool(tmp_path, segment_bytes=64)
    spool.open()
    bodies = [f"body number {i}".encode() * 3 for i in range(3)]  # one segment each
    ends = [spool.write(TRACES, body, head=b"head") for body in bodies]
    assert len({end.segment for end in ends}) == 3
    for body, end in zip(bodies, ends, strict=True):
        read = spool.reader(end, len(body))
        assert (read(0, len(body)), read(5, 11)) == (body, body[5:11])
        with pytest.raises(ValueError, match="outside"):
            read(0, len(body) + 1)
    spool.close()


def test_a_torn_tail_is_cut_and_appends_continue(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.open()
    spool.sync(spool.write(TRACES, b"whole"))
    spool.close()
    segment = max(tmp_path.glob("*.wal"))
    with open(segment, "ab") as handle:  # a crash in the middle of the next record
        handle.write(b"\x10\x00\x00\x00\x01\x02")
    again = _spool(tmp_path)
    records = list(again.open()[0])
    assert [r.payload for r in records] == [b"whole"]
    assert segment.stat().st_size == records[0].end.offset
    again.sync(again.write(TRACES, b"next"))
    again.close()
    assert [r.payload for r in _reopen(tmp_path)] == [b"whole", b"next"]


def _reopen(path: Path) -> list:  # type: ignore[type-arg]
    spool = _spool(path)
    records = list(spool.open()[0])
    spool.close()
    return records


def test_flushed_records_are_not_replayed_and_their_segments_go(tmp_path: Path) -> None:
    spool = _spool(tmp_path, segment_bytes=64)  # a new segment every record or two
    spool.open()
    ends = [spool.write(TRACES, bytes(40)) for _ in range(4)]
    spool.sync(ends[-1])
    spool.begin_flush(ends[0], ends[2])
    spool.end_flush(ends[2], released_bytes=3 * (40 + 9))
    assert spool.unflushed_bytes == 40 + 9
    spool.close()
    assert len(list(tmp_path.glob("*.wal"))) < 5  # whole flushed segments were deleted
    records = _reopen(tmp_path)
    assert [r.end for r in records] == [ends[3]]


def test_an_interrupted_flush_is_reported_with_its_range_and_token(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.open()
    ends = [spool.write(TRACES, b"x") for _ in range(3)]
    spool.sync(ends[-1])
    spool.begin_flush(ends[0], ends[1])
    token = spool.token(ends[0], ends[1])
    spool.close()  # crashed between the insert and end_flush
    again = _spool(tmp_path)
    found, interrupted = again.open()
    assert len(list(found)) == 3 and interrupted == (ends[0], ends[1])
    assert again.token(*interrupted) == token  # the replay uses the same token
    again.close()


def test_a_full_spool_refuses_and_a_second_collector_is_kept_out(tmp_path: Path) -> None:
    spool = _spool(tmp_path, max_bytes=100)
    spool.open()
    spool.write(TRACES, bytes(60))
    with pytest.raises(SpoolFullError, match="not yet in the store"):
        spool.write(TRACES, bytes(60))
    with pytest.raises(SpoolLockedError, match=r"own storage\.spool\.path"):
        _spool(tmp_path).open()
    spool.close()
    reopened = _spool(tmp_path)
    reopened.open()  # released with close()
    reopened.close()


def test_a_replayed_flush_that_had_landed_is_not_counted_twice(tmp_path: Path, recorder) -> None:  # type: ignore[no-untyped-def]
    """As if the collector died after an insert and before marking it flushed.

    The restarted collector segments ``x`` differently, so its replayed
    aggregate rows differ from the ones that landed: only the flush's token
    (not ClickHouse's fallback of comparing block contents) can drop them.
    """
    from segwatch.collector.config import parse_config
    from segwatch.collector.service.collector import Collector
    from segwatch.instrumentation import monitor

    text = (
        f"storage:\n  dsn: chdb://{tmp_path / 'store'}\n"
        "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        "api:\n  endpoint: 127.0.0.1:0\nscheduler:\n  enabled: false\n"
    )
    config = parse_config(text)
    model = monitor("m", tracer_provider=recorder.provider)
    first = Collector(config)
    first.start()
    try:
        assert first.processor is not None and first.spool is not None
        for i in range(3):
            for j in range(10):
                with model.call() as call:
                    call.features(x=float(i * 10 + j))
            first.processor.consume(recorder.request())
        first.flush()
        spool_dir = first.spool.directory
    finally:
        first.shutdown()
    flushing = (spool_dir / "flushing").read_text().split()
    (spool_dir / "flushed").write_text("0.0")  # the mark never made it to disk

    second = Collector(
        parse_config(text + "models:\n  m:\n    features:\n      x: {segments: {edges: [5, 15]}}\n")
    )
    second.start()  # replays the whole spool; the interrupted flush with its old token
    try:
        second.flush()
        client = second._clients.api  # type: ignore[union-attr]
        calls = client.query("SELECT count() FROM ml_model_calls").result_rows
        totals = client.query(
            "SELECT sum(count) FROM ml_segment_aggregates "
            "WHERE segment_dim = '__all__' AND quantity = 'feature.x'"
        ).result_rows
    finally:
        second.shutdown()
    assert len(flushing) == 2
    assert calls == [(30,)] and totals == [(30.0,)]
