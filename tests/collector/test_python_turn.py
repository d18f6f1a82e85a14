"""The collector's Python-heavy steps take turns (``PYTHON_TURN``): requests are
decoded one at a time, whatever the number of gRPC handler threads, and a flush's
aggregation never runs beside a decode (see segwatch.collector.durable.python_turn)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config.storage import TracesConfig
from segwatch.collector.durable import processor as processor_module
from segwatch.collector.durable.flush_unit import PendingBatch
from segwatch.collector.durable.flush_writer import FlushWriter
from segwatch.collector.durable.processor import ModelCallProcessor
from segwatch.collector.durable.python_turn import PYTHON_TURN
from segwatch.collector.errors import PermanentError
from segwatch.collector.model_calls import ModelCallBatch
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


class _TurnCheckingAggregator(SegmentAggregator):
    """Records whether the turn was held while it aggregated."""

    held: list[bool]

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        self.held.append(PYTHON_TURN.locked())
        return super().aggregate(*args, **kwargs)


def test_a_flush_aggregates_in_its_turn(client: Any) -> None:
    aggregator = _TurnCheckingAggregator()
    aggregator.held = []
    exporter = ClickHouseExporter(client)
    exporter.start()
    writer = FlushWriter(aggregator, exporter, None, raw_calls=True, traces=TracesConfig(),
                         store_timeout=30, max_flush_attempts=3)  # fmt: skip
    batch = ModelCallBatch(models=[("m", "", "serving")], model_index=[0], start_ns=[1],
                           duration_ns=[1], trace_ids=[b"\x01" * 16], span_ids=[b"\x02" * 8],
                           operations=[""], prediction_ids=[""], service_names=[""],
                           weights=[1.0])  # fmt: skip
    try:
        assert writer.write(PendingBatch(batch, None, 0, [], 0.0)) is None
    finally:
        exporter.shutdown()
    assert aggregator.held == [True]
    assert not PYTHON_TURN.locked()  # given back before the insert
