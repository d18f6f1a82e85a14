"""Limits on what one request, one span and one model may bring (``receiver.limits``, segments).

Over-limit model-call spans are rejected one by one and counted in the OTLP
partial-success answer; too many spans in a request is INVALID_ARGUMENT; a
message over the size limit is RESOURCE_EXHAUSTED (gRPC's own check, before
anything is decoded). Both decoders apply the same checks.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config import CollectorConfig, SegmentsConfig, parse_config
from segwatch.collector.config.limits import RequestLimits
from segwatch.collector.decode.fast_reader import scan_request
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.durable.processor import _reload, spool_payload
from segwatch.collector.durable.spool import TRACES_LIMITED, Position, Record
from segwatch.collector.errors import PermanentError
from segwatch.collector.model_calls import Column, ModelCallBatch
from segwatch.collector.receive.receiver import OTLPReceiver
from segwatch.collector.segment.plan import SegmentationPlan

NOW = time.time_ns() - 60 * 10**9  # recent: the raw calls keep 30 days
LIMITS = RequestLimits(
    max_message_mib=1, max_spans_per_request=50, max_attributes_per_span=10,
    max_attribute_bytes=200,
)  # fmt: skip


def _span(i: int, **extra: str | float) -> Span:
    start = NOW + i
    span = Span(name=f"predict {i}", trace_id=bytes([1]) * 16, span_id=i.to_bytes(8, "big"),
                start_time_unix_nano=start, end_time_unix_nano=start + 1000)  # fmt: skip
    values = {"ml.model.name": "fraud", "ml.feature.amount": float(i), **extra}
    for key, value in values.items():
        any_value = (
            AnyValue(string_value=value) if isinstance(value, str) else AnyValue(double_value=value)
        )
        span.attributes.append(KeyValue(key=key, value=any_value))
    return span


def _request(spans: list[Span]) -> trace_service_pb2.ExportTraceServiceRequest:
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.extend(spans)
    return request


def _both(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ModelCallBatch]:
    """The request through the fast path and through the reference decoder."""
    fast = scan_request(request.SerializeToString(), 0, LIMITS)
    assert fast is not None, "the fast path should read this request"
    return [fast, decode_request(request, 0, LIMITS)]


def test_a_span_with_too_many_attributes_is_rejected_alone() -> None:
    many = {f"ml.feature.f{k}": float(k) for k in range(12)}  # 14 attributes in all
    request = _request([_span(0), _span(1, **many), _span(2)])
    for batch in _both(request):
        assert len(batch) == 2 and batch.rejected_spans == 1
        assert batch.rejection_reasons == [
            "span 'predict 1': 14 attributes, over the limit of 10 "
            "(receiver.limits.max_attributes_per_span)"
        ]
        assert batch.span_ids == [(0).to_bytes(8, "big"), (2).to_bytes(8, "big")]
        assert sorted(batch.quantities["feature.amount"].number_data()[1].tolist()) == [0.0, 2.0]


def test_a_span_with_an_oversized_attribute_is_rejected_alone() -> None:
    request = _request(
        [_span(0, **{"ml.feature.note": "x" * 300}), _span(1, **{"ml.feature.note": "ok"})]
    )
    for batch in _both(request):
        assert len(batch) == 1 and batch.rejected_spans == 1
        assert batch.rejection_reasons == [  # the same size in both: the KeyValue as serialized
            "span 'predict 0': an attribute of 323 bytes, over the limit of 200 "
            "(receiver.limits.max_attribute_bytes)"
        ]
        assert batch.quantities["feature.note"].label_data()[1].tolist() == ["ok"]


def test_spans_that_are_not_model_calls_are_ignored_whatever_their_size() -> None:
    other = Span(name="GET /", trace_id=bytes(16), span_id=bytes(8))
    other.attributes.append(KeyValue(key="http.body", value=AnyValue(string_value="y" * 5000)))
    for batch in _both(_request([other, _span(1)])):
        assert len(batch) == 1 and batch.rejected_spans == 0


def test_too_many_spans_in_one_request_is_invalid() -> None:
    request = _request([_span(i) for i in range(51)])
    with pytest.raises(PermanentError, match="51 spans, over the limit of 50"):
        scan_request(request.SerializeToString(), 0, LIMITS)
    with pytest.raises(PermanentError, match="max_spans_per_request"):
        decode_request(request, 0, LIMITS)


def test_a_replay_rejects_exactly_what_was_rejected_when_it_was_acknowledged() -> None:
    many = {f"ml.feature.f{k}": float(k) for k in range(12)}
    body = _request([_span(i, **(many if i % 3 == 0 else {})) for i in range(60)][:50])
    payload = spool_payload(body.SerializeToString(), 0, LIMITS)
    reloaded = _reload(Record(Position(1, len(payload)), TRACES_LIMITED, payload))
    accepted = scan_request(body.SerializeToString(), 0, LIMITS)
    assert reloaded is not None and accepted is not None
    replayed, token = reloaded
    assert token is None  # a request, not a unit of its own
    assert len(replayed) == len(accepted) == 33
    assert replayed.span_ids == accepted.span_ids


def test_a_few_bytes_of_batch_span_cannot_make_more_calls_than_a_request_may_hold() -> None:
    # ml.batch.size with scalar values broadcast to every row: 30 bytes asking for 40 calls.
    def batch_span(i: int, size: int) -> Span:
        span = _span(i)
        span.attributes.append(KeyValue(key="ml.batch.size", value=AnyValue(int_value=size)))
        return span

    request = _request([_span(0), batch_span(1, 40), batch_span(2, 45), _span(3)])
    batch = decode_request(request, 0, LIMITS)  # batch spans: always the reference decoder
    assert len(batch) == 1 + 40 + 1  # the 45 rows would make 86 calls, over the 50 allowed
    assert batch.rejected_spans == 1
    assert "receiver.limits.max_spans_per_request" in batch.rejection_reasons[0]


class _Nothing:
    def consume(self, request: Any) -> Any:  # pragma: no cover - never reached
        raise AssertionError("an oversized message reached the pipeline")

    consume_logs = consume


def test_a_message_over_the_size_limit_is_refused_before_decoding() -> None:
    receiver = OTLPReceiver("127.0.0.1:0", _Nothing(), max_message_bytes=1 << 20)  # type: ignore[arg-type]
    receiver.start()
    try:
        with grpc.insecure_channel(receiver.address) as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            )
            with pytest.raises(grpc.RpcError) as caught:
                export(b"\x0a" + bytes(2 << 20), timeout=10)
    finally:
        receiver.shutdown()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


def test_the_limits_are_configured_and_checked() -> None:
    config = parse_config(
        "receiver:\n  limits:\n    max_spans_per_request: 500\n    max_attribute_bytes: 4096\n"
        "segments:\n  max_per_model: 300\n"
    )
    assert config.receiver.limits == RequestLimits(64, 500, 1000, 4096)
    assert config.segments.max_per_model == 300
    with pytest.raises(ValueError) as caught:
        parse_config("receiver:\n  limits:\n    max_attribute_bytes: 1\n    max_message_mib: 0\n")
    assert "receiver.limits.max_attribute_bytes" in str(caught.value)
    assert "receiver.limits.max_message_mib" in str(caught.value)


def test_a_model_cannot_create_more_segments_than_its_budget() -> None:
    # 10 category features of 30 values each; each dimension reserves top_k + 2 = 7 segments,
    # so a budget of 30 segments four dimensions (28).
    config = CollectorConfig(segments=SegmentsConfig(top_k=5, max_per_model=30))
    aggregator = SegmentAggregator(SegmentationPlan(config))
    n = 300
    batch = _calls(n)
    for f in range(10):
        batch.quantities[f"feature.f{f}"] = Column(
            label_rows=list(range(n)), labels=[f"v{i % 30}" for i in range(n)]
        )
    rows = aggregator.aggregate(batch)
    dims = [rows.columns["segment_dim"][i] for i in range(len(rows))]
    quantities = [rows.columns["quantity"][i] for i in range(len(rows))]
    assert len({d for d in dims if d.startswith("feature.")}) == 4
    assert aggregator.unsegmented["m"] == 6
    # Every feature is still a quantity of the whole model.
    whole = {q for d, q in zip(dims, quantities, strict=True) if d == "__all__"}
    assert {f"feature.f{f}" for f in range(10)} <= whole


def test_a_request_bringing_a_model_past_max_models_is_refused(client: Any, tmp_path: Any) -> None:
    from segwatch.collector.durable.processor import ModelCallProcessor
    from segwatch.collector.store.exporter import ClickHouseExporter

    exporter = ClickHouseExporter(client)
    exporter.start()
    processor = ModelCallProcessor(SegmentAggregator(), exporter, max_models=2)
    processor.start()

    def request(*models: str) -> bytes:
        spans = []
        for i, name in enumerate(models):
            span = _span(i)
            span.attributes[0].value.string_value = name  # ml.model.name
            spans.append(span)
        return _request(spans).SerializeToString()

    try:
        assert processor.consume(request("a", "b")).accepted == 2
        with pytest.raises(PermanentError, match="'c' would pass the limit of 2 models"):
            processor.consume(request("a", "c"))
        assert processor.consume(request("b", "a")).accepted == 2  # known models still flow
    finally:
        processor.shutdown()
        exporter.shutdown()
    assert client.query("SELECT count() FROM ml_model_calls").result_rows == [(4,)]


def test_field_vocabularies_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from segwatch.collector.aggregate import aggregator as aggregate

    monkeypatch.setattr(aggregate, "MAX_VOCABULARIES", 3)
    aggregator = SegmentAggregator()
    n = 10
    batch = _calls(n)
    for f in range(6):
        batch.quantities[f"feature.f{f}"] = Column(label_rows=list(range(n)), labels=["x"] * n)
    rows = aggregator.aggregate(batch)
    assert len(aggregator._vocabularies) == 3 and aggregator.vocabularies_full > 0
    dims = {rows.columns["segment_dim"][i] for i in range(len(rows))}
    assert {f"feature.f{f}" for f in range(6)} <= dims  # every field still segmented


def test_a_span_from_the_future_is_rejected_in_both_decoders() -> None:
    import dataclasses

    limits = dataclasses.replace(LIMITS, newest_ns=NOW + 10)
    request = _request([_span(0), _span(11), _span(5)])  # starts NOW + i
    fast = scan_request(request.SerializeToString(), 0, limits)
    for batch in (fast, decode_request(request, 0, limits)):
        assert batch is not None and len(batch) == 2 and batch.rejected_spans == 1
        assert batch.rejection_reasons == [
            "span 'predict 11' starts in the future, past the allowed clock skew"
        ]
        assert batch.rejected_by == {"late": 1}


def test_a_model_cannot_have_more_fields_than_max_fields_per_model() -> None:
    config = CollectorConfig(segments=SegmentsConfig(max_fields_per_model=3))
    aggregator = SegmentAggregator(SegmentationPlan(config))
    n = 10

    def batch(fields: list[str]) -> ModelCallBatch:
        out = _calls(n)
        for name in fields:
            out.quantities[name] = Column(number_rows=list(range(n)), numbers=[1.0] * n)
        return out

    def quantities(rows: Any) -> set[str]:
        return {rows.columns["quantity"][i] for i in range(len(rows))}

    first = aggregator.aggregate(batch(["feature.a", "feature.b"]))
    assert quantities(first) == {"feature.a", "feature.b"}
    second = aggregator.aggregate(batch(["feature.c", "feature.d", "feature.e"]))
    kept = quantities(second)
    assert kept == {"feature.a", "feature.b", "feature.c"}  # the first new name in order fits
    assert aggregator.unaggregated["m"] == 2


def _calls(n: int) -> ModelCallBatch:
    """``n`` calls of model ``m`` with no fields yet."""
    return ModelCallBatch(
        models=[("m", "1", "serving")], model_index=[0] * n,
        start_ns=[1_700_000_000_000_000_000] * n, duration_ns=[1] * n,
        trace_ids=[bytes(16)] * n, span_ids=[bytes(8)] * n, operations=[""] * n,
        prediction_ids=[""] * n, service_names=[""] * n, weights=[1.0] * n,
    )  # fmt: skip
