"""Requests are decoded one at a time, whatever the number of gRPC handler threads.

Decoding holds the GIL but for short numpy calls: two handlers decoding at once
gained nothing and cost 9 % more CPU per span (README, Benchmarks: bench/ingest.py).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.durable import processor as processor_module
from segwatch.collector.durable.processor import ModelCallProcessor
from segwatch.collector.errors import PermanentError
from segwatch.collector.store.exporter import ClickHouseExporter


def test_concurrent_requests_are_decoded_one_at_a_time(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, most = 0, 0
    count = threading.Lock()

    def slow_decode(request: Any, oldest_ns: int, limits: Any) -> Any:
        nonlocal inside, most
        with count:
            inside += 1
            most = max(most, inside)
        time.sleep(0.05)  # long enough for every other thread to arrive meanwhile
        with count:
            inside -= 1
        raise PermanentError("not decoded: the test stops here")

    monkeypatch.setattr(processor_module, "_decode", slow_decode)
    processor = ModelCallProcessor(SegmentAggregator(), ClickHouseExporter(client))
    refused: list[Exception] = []

    def send() -> None:
        try:
            processor.consume(b"request")
        except PermanentError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(refused) == 4  # every request was decoded (and refused by the stand-in)
    assert most == 1
