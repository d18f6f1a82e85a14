"""The fast reader (numpy) reads every request it takes exactly as the reference reader does."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from segwatch.collector import kernels
from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.decode.fast_reader import scan_request
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.model_calls import ModelCallBatch
from segwatch.instrumentation import monitor

_FIELDS = (
    "models", "model_index", "start_ns", "duration_ns", "trace_ids", "span_ids", "operations",
    "prediction_ids", "service_names", "weights", "rejected_spans", "rejection_reasons",
    "ignored_values",
)  # fmt: skip


def assert_same_batch(fast: ModelCallBatch, reference: ModelCallBatch) -> None:
    for name in _FIELDS:
        assert getattr(fast, name) == getattr(reference, name), name
    for table in ("quantities", "contexts"):
        ours, theirs = getattr(fast, table), getattr(reference, table)
        assert list(ours) == list(theirs), table
        for key, column in theirs.items():
            rows, numbers = column.number_data()
            fast_rows, fast_numbers = ours[key].number_data()
            assert fast_rows.tolist() == rows.tolist(), key
            np.testing.assert_array_equal(fast_numbers, numbers)  # NaN == NaN here
            label_rows, labels = column.label_data()
            fast_label_rows, fast_labels = ours[key].label_data()
            assert (fast_label_rows.tolist(), fast_labels.tolist()) == (
                label_rows.tolist(),
                labels.tolist(),
            )


def test_sdk_spans_take_the_fast_path_and_match(recorder) -> None:
    tracer = recorder.provider.get_tracer("t")
    with tracer.start_as_current_span("GET /health") as span:
        span.set_attribute("http.route", "/health")
    model = monitor("fraud", version="2", tracer_provider=recorder.provider)
    for i in range(50):
        with model.call() as call:
            call.features(amount=i * 1.5, n=i - 25, country=["BR", "US", "ñ€"][i % 3],
                          flag=i % 2 == 0, big=2**62 + i)  # fmt: skip
            call.outputs(score=0.5 if i % 7 else math.nan, label="ok")
            call.metric("latency", float(i))
            call.prediction_id(f"p{i}")
    payload = recorder.request().SerializeToString()
    fast = scan_request(payload)
    assert fast is not None and len(fast) == 50
    assert_same_batch(fast, decode_request(ExportTraceServiceRequest.FromString(payload)))


def _value(kind: str, x: Any) -> AnyValue:
    if kind == "empty":
        return AnyValue()
    if kind == "array":
        value = AnyValue()
        value.array_value.values.add().double_value = 1.0
        return value
    return AnyValue(**{kind: x})


_VALUES = st.one_of(
    st.tuples(st.just("string_value"), st.text(max_size=80)),
    st.tuples(st.just("int_value"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("double_value"), st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.just("bool_value"), st.booleans()),
    st.tuples(st.just("empty"), st.none()),
)
"""Values of the kinds the fast path reads (the others: test_what_the_fast_path_leaves...)."""
_KEYS = st.sampled_from(
    [
        "ml.model.name", "ml.model.version", "ml.model.stage", "ml.operation",
        "ml.prediction.id", "ml.sample.weight", "ml.feature.a", "ml.feature.b", "ml.output.y",
        "ml.metric.m", "ml.context.lang", "ml.feature.", "http.method", "ml.featurex",
    ]
)  # fmt: skip
_SPAN = st.tuples(
    st.lists(st.tuples(_KEYS, _VALUES), max_size=8, unique_by=lambda kv: kv[0]),
    st.integers(0, 2**64 - 1),  # start
    st.integers(0, 2**64 - 1),  # end
    st.booleans(),  # with a valid model name
)


def _request(resources: list[tuple[str, list[Any]]]) -> bytes:
    request = ExportTraceServiceRequest()
    for service, spans in resources:
        resource_spans = request.resource_spans.add()
        if service:
            resource_spans.resource.attributes.add(
                key="service.name", value=AnyValue(string_value=service)
            )
        scope = resource_spans.scope_spans.add()
        for i, (attributes, start, end, named) in enumerate(spans):
            span = scope.spans.add(name=f"span {i}", start_time_unix_nano=start,
                                   end_time_unix_nano=end, trace_id=bytes([i % 256]) * 16,
                                   span_id=bytes([i % 256]) * 8)  # fmt: skip
            if named and all(key != "ml.model.name" for key, _ in attributes):
                span.attributes.append(
                    KeyValue(key="ml.model.name", value=AnyValue(string_value="m"))
                )
            for key, (kind, x) in attributes:
                span.attributes.append(KeyValue(key=key, value=_value(kind, x)))
    return request.SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    resources=st.lists(
        st.tuples(st.sampled_from(["", "svc-a", "svc-b"]), st.lists(_SPAN, max_size=6)), max_size=3
    ),
    oldest_ns=st.sampled_from([0, 2**40, 2**63]),
)
def test_generated_requests_decode_the_same_both_ways(resources, oldest_ns) -> None:
    payload = _request(resources)
    fast = scan_request(payload, oldest_ns)
    reference = decode_request(ExportTraceServiceRequest.FromString(payload), oldest_ns)
    assert fast is not None  # these shapes are all the fast path's to read
    assert_same_batch(fast, reference)


@contextmanager
def _numpy_only() -> Iterator[None]:
    """As on a machine where the compiled loops could not be built."""
    library, compiled = kernels._LIBRARY, kernels.COMPILED
    kernels._LIBRARY, kernels.COMPILED = None, False
    try:
        yield
    finally:
        kernels._LIBRARY, kernels.COMPILED = library, compiled


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    resources=st.lists(
        st.tuples(st.sampled_from(["", "svc-a", "svc-b"]), st.lists(_SPAN, max_size=6)), max_size=3
    ),
)
def test_without_the_compiled_loops_the_fast_path_reads_the_same(resources) -> None:
    payload = _request(resources)
    with _numpy_only():
        fast = scan_request(payload)
    assert fast is not None
    assert_same_batch(fast, decode_request(ExportTraceServiceRequest.FromString(payload)))


def test_without_the_compiled_loops_the_aggregates_are_the_same(recorder) -> None:
    model = monitor("fraud", tracer_provider=recorder.provider)
    for i in range(300):
        with model.call() as call:
            call.features(amount=(i % 17) * 10.5, country=["BR", "US", "DE"][i % 3], n=i)
            call.outputs(score=(i % 10) / 10, label=["a", "b"][i % 2])
    payload = recorder.request().SerializeToString()
    compiled = SegmentAggregator().aggregate(scan_request(payload))
    with _numpy_only():
        batch = scan_request(payload)
        assert batch is not None
        numpy_rows = SegmentAggregator().aggregate(batch)
    assert len(compiled) > 0 and compiled.native() == numpy_rows.native()  # byte for byte


def test_what_the_fast_path_leaves_to_the_reference() -> None:
    def one(*attributes: tuple[str, AnyValue]) -> bytes:
        return _request([("", [([(k, v) for k, v in attributes], 1, 2, True)])])

    def kv(key: str, kind: str, x: Any = None) -> tuple[str, tuple[str, Any]]:
        return key, (kind, x)

    assert scan_request(one(kv("ml.feature.a", "double_value", 1.0))) is not None
    assert scan_request(one(kv("ml.feature.a", "array"))) is None  # a batch span
    assert scan_request(one(kv("ml.batch.size", "int_value", 2))) is None
    assert scan_request(one(kv("ml.feature.a", "bytes_value", b"x"))) is None
    assert (
        scan_request(one(kv("ml.feature.a", "int_value", 1), kv("ml.feature.a", "int_value", 2)))
        is None
    )
    assert scan_request(one(kv("", "int_value", 1))) is None  # no key field at all
    assert scan_request(one(kv("ml.feature." + "k" * 70, "int_value", 1))) is None
    assert scan_request(b"\x0a\xff") is None  # malformed: the reference raises the error


def test_irregular_spans_are_left_to_the_reference() -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    span = Span(name="predict m", trace_id=b"\x01" * 16, span_id=b"\x02" * 8,
                start_time_unix_nano=5, end_time_unix_nano=9)  # fmt: skip
    span.attributes.add(key="ml.model.name").value.string_value = "m"
    span.attributes.add(key="ml.feature.x").value.double_value = 1.5
    good = span.SerializeToString()

    def request(*raw_spans: bytes) -> bytes:
        scope_spans = b"".join(_field(2, raw) for raw in raw_spans)
        return _field(1, _field(2, scope_spans))  # request → resource spans → scope spans

    fast = scan_request(request(good, b"", good))  # an empty span is a span with no fields
    assert fast is not None and len(fast) == 2
    assert_same_batch(
        fast, decode_request(ExportTraceServiceRequest.FromString(request(good, b"", good)))
    )
    for irregular in (
        good + b"\x2a\x01b",  # the name twice: which one counts is the reference's call
        good + b"\x39" + bytes(8),  # the start time twice
        good + b"\x38\x01",  # the start time as a varint
        good + b"\x4b",  # a group (wire type 3)
        good + b"\x4a\x05ab",  # an attribute longer than its span
        good + b"\x2a\x02\xff\xfe",  # a name that is not UTF-8... as a second name
        b"\x2a\x02\xff\xfe",  # a name that is not UTF-8
    ):
        assert scan_request(request(good, irregular)) is None, irregular


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, body: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def test_the_levels_above_the_spans_are_walked_as_protobuf_parses_them() -> None:
    """Resources, scopes and fields the fast reader skips (schema URLs, dropped counts)
    read the same both ways; what is irregular above the spans goes to the reference."""
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from segwatch.collector.model_calls import SpanRecord

    request = ExportTraceServiceRequest()
    for service in ("a", "", "b"):
        resource_spans = request.resource_spans.add(schema_url="https://r")
        resource_spans.resource.dropped_attributes_count = 3
        resource_spans.resource.attributes.add(key="host", value=AnyValue(int_value=1))
        if service:
            resource_spans.resource.attributes.add(
                key="service.name", value=AnyValue(string_value=service)
            )
        for scope_name in ("s1", "s2"):
            scope = resource_spans.scope_spans.add(schema_url="https://s")
            scope.scope.CopyFrom(InstrumentationScope(name=scope_name, version="1"))
            for i in range(3):
                name = f"{service}{scope_name}{i}"
                span = scope.spans.add(name=name, trace_id=bytes(16), span_id=bytes([i]) * 8,
                                       start_time_unix_nano=i + 1)  # fmt: skip
                span.attributes.add(key="ml.model.name", value=AnyValue(string_value="m"))
                span.attributes.add(key="ml.feature.x", value=AnyValue(double_value=i))
    payload = request.SerializeToString()
    fast = scan_request(payload)
    assert fast is not None and len(fast) == 18
    assert fast.service_names == ["a"] * 6 + [""] * 6 + ["b"] * 6
    assert_same_batch(fast, decode_request(ExportTraceServiceRequest.FromString(payload)))
    # The spans kept for otel_traces: each with its own resource and scope.
    (origin,) = fast.span_origins
    records: list[SpanRecord] = [origin.source.record(i) for i in range(18)]
    assert [r.span.name for r in records][5:8] == ["as22", "s10", "s11"]
    assert records[7].span == request.resource_spans[1].scope_spans[0].spans[1]
    assert (
        records[17].scope.name == "s2" and records[17].resource_attributes[1].key == "service.name"
    )
    assert isinstance(records[0].span, Span)

    def one_span(resource_spans: bytes) -> bytes:
        return _field(1, resource_spans)

    scope_spans = _field(2, request.resource_spans[0].scope_spans[0].spans[0].SerializeToString())
    resource = _field(1, request.resource_spans[0].resource.SerializeToString())
    assert scan_request(one_span(resource + _field(2, scope_spans))) is not None
    for irregular in (
        one_span(resource + resource + _field(2, scope_spans)),  # the resource twice
        one_span(_field(2, _field(1, b"") + _field(1, b"") + scope_spans)),  # the scope twice
        one_span(resource + b"\x10\x01"),  # scope_spans as a varint
        one_span(resource + _field(2, scope_spans)) + b"\x0b",  # a group
        one_span(resource + _field(2, scope_spans))[:-1],  # cut off
        one_span(resource + _field(2, scope_spans)) + _varint(1 << 32 | 0) + b"\x00",  # field 2^29
    ):
        assert scan_request(irregular) is None, irregular
