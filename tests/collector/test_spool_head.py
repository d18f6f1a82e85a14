"""A spool record written as a head and a payload is the one record of both, joined."""

from __future__ import annotations

from pathlib import Path

from segwatch.collector.durable.processor import spool_head, spool_payload
from segwatch.collector.durable.spool import (
    TRACES,
    TRACES_LIMITED,
    Spool,
    pack_record,
    record_bytes,
)


def test_a_head_and_a_payload_come_back_as_one_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    head = spool_head(7)
    ends = [
        spool.write(TRACES_LIMITED, b"the request", head=head),
        spool.write(TRACES, b"", head=b"only a head"),
        spool.write(TRACES, b"no head"),
    ]
    spool.sync(ends[-1])
    spool.close()
    # The same bytes as the record of the joined payload (its checksum included).
    segment = max(tmp_path.glob("*.wal"))
    assert segment.read_bytes() == b"".join(
        [
            pack_record(TRACES_LIMITED, spool_payload(b"the request", 7)),
            pack_record(TRACES, b"only a head"),
            pack_record(TRACES, b"no head"),
        ]
    )
    again = Spool(tmp_path, max_bytes=1 << 20)
    records = list(again.open()[0])
    assert [r.payload for r in records] == [head + b"the request", b"only a head", b"no head"]
    assert [r.end for r in records] == ends
    assert ends[0].offset == record_bytes(head + b"the request")
    again.close()
