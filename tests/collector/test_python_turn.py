"""The collector's Python-heavy steps take turns (``PYTHON_TURN``): requests are
decoded one at a time, whatever the number of gRPC handler threads; a flush's steps
run in their turn and give it back before the insert; a request whose turn does not
come within the back-pressure bound is answered UNAVAILABLE (see
segwatch.collector.durable.python_turn)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config.storage import TracesConfig
from segwatch.collector.durable import processor as processor_module
from segwatch.collector.durable.flush_unit import PendingBatch
from segwatch.collector.durable.flush_writer import FlushWriter
from segwatch.collector.durable.processor import ModelCallProcessor
from segwatch.collector.durable.python_turn import PYTHON_TURN
from segwatch.collector.errors import PermanentError, RetryableError
from segwatch.collector.model_calls import ModelCallBatch
from segwatch.collector.store.exporter import ClickHouseExporter

SENDERS = 4


def test_concurrent_requests_are_decoded_one_at_a_time(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    senders_in, all_in = [0], threading.Event()
    inside, most = 0, 0
    count = threading.Lock()

    def waiting_decode(request: Any, oldest_ns: int, limits: Any) -> Any:
        nonlocal inside, most
        with count:
            inside += 1
            most = max(most, inside)
        # Every sender has called consume before the first decode ends: without the turn
        # all of them would be in here at once, however slowly their threads started.
        assert all_in.wait(timeout=10)
        with count:
            inside -= 1
        raise PermanentError("not decoded: the test stops here")

    monkeypatch.setattr(processor_module, "_decode", waiting_decode)
    processor = ModelCallProcessor(SegmentAggregator(), ClickHouseExporter(client))
    refused: list[Exception] = []

    def send() -> None:
        with count:
            senders_in[0] += 1
            if senders_in[0] == SENDERS:
                all_in.set()
        try:
            processor.consume(b"request")
        except PermanentError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=send) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(refused) == SENDERS  # every request was decoded (and refused by the stand-in)
    assert most == 1


def test_a_request_whose_turn_does_not_come_is_answered_unavailable(client: Any) -> None:
    processor = ModelCallProcessor(
        SegmentAggregator(), ClickHouseExporter(client), backpressure_timeout=0.2
    )
    with PYTHON_TURN, pytest.raises(RetryableError, match="no turn to decode"):  # a flush's
        processor.consume(b"request")


class _TurnCheckingAggregator(SegmentAggregator):
    """Records whether the turn was held while it aggregated."""

    held: list[bool]

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        self.held.append(PYTHON_TURN.locked())
        return super().aggregate(*args, **kwargs)


def test_a_flush_aggregates_in_its_turn_and_inserts_outside_it(client: Any) -> None:
    aggregator = _TurnCheckingAggregator()
    aggregator.held = []
    exporter = ClickHouseExporter(client)
    submit = exporter.submit
    held_at_insert: list[bool] = []

    def checking_submit(*args: Any, **kwargs: Any) -> Any:
        held_at_insert.append(PYTHON_TURN.locked())
        return submit(*args, **kwargs)

    exporter.submit = checking_submit  # type: ignore[method-assign]
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
    assert held_at_insert[:1] == [False]
