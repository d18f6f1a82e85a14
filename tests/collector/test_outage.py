"""A store outage, end to end: spool, back-pressure, RetryInfo, the SDK's retry, exactly once.

The collector's pipeline runs in this process with the real OTLP receiver on
loopback and the real embedded store, behind a fault-injecting wrapper
(:class:`store_faults.Outage`: the embedded engine cannot be made to fail on
cue) that refuses every insert while the store is "down". The OTel SDK's
OTLP exporter sends from several threads and does its own retrying.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace.export import SpanExportResult
from store_faults import Outage
from waiting import wait_until

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config import SpoolConfig
from segwatch.collector.durable.processor import ConsumeResult, ModelCallProcessor
from segwatch.collector.durable.spool import Spool
from segwatch.collector.errors import RetryableError
from segwatch.collector.receive.receiver import OTLPReceiver
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import monitor

SPANS_PER_EXPORT = 50
PENDING_LIMIT = 200  # calls held in memory; beyond it they are spilled to the spool


class _CountingConsumer:
    """The processor, counting the requests it answered UNAVAILABLE."""

    def __init__(self, processor: ModelCallProcessor) -> None:
        self._processor = processor
        self.unavailable = 0

    def consume(self, request: Any) -> ConsumeResult:
        try:
            return self._processor.consume(request)
        except RetryableError:
            self.unavailable += 1
            raise

    def consume_logs(self, request: Any) -> ConsumeResult:
        return self._processor.consume_logs(request)


class _Pipeline:
    def __init__(self, client: Any, tmp_path: Path, spool_bytes: int) -> None:
        self.store = Outage(client, down=True)
        self.exporter = ClickHouseExporter(self.store)  # type: ignore[arg-type]
        self.spool = Spool(tmp_path / "spool", max_bytes=spool_bytes)
        self.spool.open()
        # Two failed flushes of a store that answers make a dead letter; an outage, none.
        flushing = SpoolConfig(flush_interval=0.05, flush_calls=100,
                               max_pending_calls=PENDING_LIMIT, max_flush_attempts=2)  # fmt: skip
        self.processor = ModelCallProcessor(
            SegmentAggregator(), self.exporter, spool=self.spool, flushing=flushing,
            backpressure_timeout=0.2,
        )  # fmt: skip
        self.consumer = _CountingConsumer(self.processor)
        self.receiver = OTLPReceiver("127.0.0.1:0", self.consumer)  # type: ignore[arg-type]

    def start(self) -> None:
        self.exporter.start()
        self.processor.start()
        self.receiver.start()

    def shutdown(self) -> None:
        self.receiver.shutdown()
        self.processor.shutdown()
        self.exporter.shutdown()
        self.spool.close()


@pytest.fixture
def pipeline(client: Any, tmp_path: Path) -> Iterator[_Pipeline]:
    # Room for about 20 of the 40 requests: the spool fills while the store is down.
    running = _Pipeline(client, tmp_path, spool_bytes=20 * SPANS_PER_EXPORT * 400)
    running.start()
    yield running
    running.shutdown()


def _batches(recorder: Any, count: int) -> list[list[Any]]:
    model = monitor("fraud", version="1", tracer_provider=recorder.provider)
    for i in range(count * SPANS_PER_EXPORT):
        with model.call() as call:
            call.features(amount=float(i % 700), country=("BR", "US", "DE")[i % 3])
            call.outputs(score=(i % 100) / 100)
    spans = recorder.spans()
    return [spans[i : i + SPANS_PER_EXPORT] for i in range(0, len(spans), SPANS_PER_EXPORT)]


def test_an_outage_spills_to_the_spool_refuses_with_retry_info_and_loses_nothing(
    pipeline: _Pipeline, client: Any, recorder: Any
) -> None:
    batches = _batches(recorder, 40)
    results: list[SpanExportResult] = []
    lock = threading.Lock()

    def send(share: list[list[Any]]) -> None:
        exporter = OTLPSpanExporter(endpoint=pipeline.receiver.address, insecure=True, timeout=30)
        try:
            for spans in share:
                result = exporter.export(spans)  # retries UNAVAILABLE, waiting as RetryInfo says
                with lock:
                    results.append(result)
        finally:
            exporter.shutdown()

    senders = [threading.Thread(target=send, args=(batches[i::4],)) for i in range(4)]
    for sender in senders:
        sender.start()
    try:
        # The store is down: requests are spooled (past the memory limit, spilled) until
        # the spool is full, then refused with UNAVAILABLE and the SDK waits and retries.
        wait_until(lambda: pipeline.consumer.unavailable >= 3, timeout=60)
        buffer = pipeline.processor.buffer
        assert buffer.store_failing and buffer.spilling  # what /readyz and /metrics report
        assert pipeline.processor.buffer.peak_pending_calls <= PENDING_LIMIT + SPANS_PER_EXPORT
        assert pipeline.spool.unflushed_bytes > 10 * SPANS_PER_EXPORT * 300  # spilled to disk
        assert client.query("SELECT count() FROM ml_model_calls").result_rows == [(0,)]
        wait_until(lambda: buffer.failures >= 3, timeout=60)  # past max_flush_attempts
        pipeline.store.down = False  # the store is back
    finally:
        for sender in senders:
            sender.join(120)
    pipeline.processor.flush(timeout=60)

    assert results == [SpanExportResult.SUCCESS] * 40  # every export landed after its retries
    assert not pipeline.processor.buffer.store_failing and not pipeline.processor.buffer.spilling
    assert pipeline.processor.buffer.spilled_records > 0  # some were read back from the spool
    # An outage is the store's fault: however many flushes failed, none was set aside.
    assert pipeline.processor.buffer.failures >= 3
    assert pipeline.processor.buffer.dead_letters == 0
    assert pipeline.processor.buffer.peak_pending_calls <= PENDING_LIMIT + SPANS_PER_EXPORT
    sent = {format(s.context.span_id, "016x") for share in batches for s in share}
    stored = [r[0] for r in client.query("SELECT span_id FROM ml_model_calls").result_rows]
    assert len(stored) == len(set(stored)) == len(sent)  # each call once
    assert set(stored) == sent
    totals = client.query(
        "SELECT sum(count) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'output.score'"
    ).result_rows
    assert totals == [(float(len(sent)),)]
    assert pipeline.spool.unflushed_bytes == 0


def test_unavailable_carries_a_retry_delay_in_both_places_clients_read(
    pipeline: _Pipeline, recorder: Any
) -> None:
    pipeline.spool.max_bytes = 0  # a full spool: every request is refused
    request = _batches(recorder, 1)
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    body = encode_spans(request[0]).SerializeToString()
    with grpc.insecure_channel(pipeline.receiver.address) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            export(body, timeout=10)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "spool" in error.details()
    trailers = dict(error.trailing_metadata())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert info.retry_delay.ToNanoseconds() == 1_000_000_000
    bare = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert bare == info
