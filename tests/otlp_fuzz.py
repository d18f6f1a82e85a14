"""Hypothesis strategies for hostile OTLP trace requests, shared by the fuzz test and bench/fuzz.py.

A payload is a serialized ``ExportTraceServiceRequest`` of spans with
model-call attributes of every type the protocol allows (and some the
convention does not), odd ids, names and times; then, half the time, its
bytes are damaged (cut short, a byte flipped, junk inserted).
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.message import DecodeError
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span

KEYS = [
    "ml.model.name", "ml.model.version", "ml.model.stage", "ml.operation", "ml.prediction.id",
    "ml.sample.weight", "ml.feature.amount", "ml.feature.country", "ml.output.score",
    "ml.output.label", "ml.metric.confidence", "ml.context.language", "ml.batch.size",
    "ml.batch.columns", "service.name", "http.method",
]  # fmt: skip

_NOW = time.time_ns()  # fixed once: a strategy must not depend on when it draws
_scalars = st.one_of(
    st.text(max_size=30),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=12),
    st.sampled_from(["fraud", "BR", "", "0.5", "NaN"]),
)
_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=6),
    st.dictionaries(st.text(max_size=8), _scalars, max_size=3),
    st.none(),
)
_keys = st.one_of(
    st.sampled_from(KEYS),
    st.builds(lambda s: f"ml.feature.{s}", st.text(max_size=12)),
    st.text(max_size=16),
)


def _any_value(value: Any) -> AnyValue:
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any_value(v) for v in value]))
    return AnyValue(kvlist_value=KeyValueList(
        values=[KeyValue(key=k, value=_any_value(v)) for k, v in value.items()]
    ))  # fmt: skip


@st.composite
def spans(draw: Any) -> Span:
    start = draw(
        st.one_of(st.integers(0, 2**64 - 1), st.integers(-(10**13), 10**12).map(_NOW.__add__))
    )
    span = Span(
        name=draw(st.text(max_size=20)),
        trace_id=draw(st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))),
        span_id=draw(st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=10))),
        start_time_unix_nano=start,
        end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
    )
    if draw(st.booleans()):  # most fuzzed spans look like model calls
        span.attributes.append(KeyValue(key="ml.model.name", value=_any_value("fraud")))
    for key, value in draw(st.lists(st.tuples(_keys, _values), max_size=8)):
        span.attributes.append(KeyValue(key=key, value=_any_value(value)))
    return span


@st.composite
def requests(draw: Any) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        resource_spans = request.resource_spans.add()
        if draw(st.booleans()):
            resource_spans.resource.attributes.append(
                KeyValue(key="service.name", value=_any_value(draw(_scalars)))
            )
        for _ in range(draw(st.integers(1, 2))):
            resource_spans.scope_spans.add().spans.extend(draw(st.lists(spans(), max_size=5)))
    return request


@st.composite
def damaged(draw: Any, payload: bytes) -> bytes:
    how = draw(st.sampled_from(["none", "none", "cut", "flip", "insert"]))
    if how == "none" or not payload:
        return payload
    at = draw(st.integers(0, len(payload) - 1))
    if how == "cut":
        return payload[:at]
    if how == "flip":
        return payload[:at] + bytes([payload[at] ^ draw(st.integers(1, 255))]) + payload[at + 1 :]
    return payload[:at] + draw(st.binary(min_size=1, max_size=8)) + payload[at:]


payloads = requests().map(lambda r: r.SerializeToString()).flatmap(damaged)
"""Serialized requests, damaged half the time."""


class PipelineUnderFuzz:
    """The collector's processor on a spool and the real store, counting what fuzz did to it.

    :meth:`feed` takes one payload: it must be answered (calls accepted,
    spans rejected) or refused as INVALID_ARGUMENT (``PermanentError``); any
    other exception is a bug and propagates. A well-formed request that the
    fast path reads must give the reference reader's batch.
    """

    def __init__(self, client: Any, spool_dir: Any) -> None:
        from segwatch.collector.aggregate.aggregator import SegmentAggregator
        from segwatch.collector.config import SpoolConfig
        from segwatch.collector.config.limits import RequestLimits
        from segwatch.collector.durable.processor import ModelCallProcessor
        from segwatch.collector.durable.spool import Spool
        from segwatch.collector.store.exporter import ClickHouseExporter

        self.exporter = ClickHouseExporter(client)
        self.spool = Spool(spool_dir, max_bytes=1 << 30)
        self.spool.open()
        # 5,000 calls a request: a fuzzed ml.batch.size makes that many calls from a few bytes
        # (the default allows 100,000), and the fuzz is after breakage, not volume.
        self.processor = ModelCallProcessor(
            SegmentAggregator(), self.exporter, spool=self.spool, allowed_lateness=7 * 86400,
            allowed_skew=3600,
            flushing=SpoolConfig(flush_interval=0.5),
            limits=RequestLimits(max_spans_per_request=5_000),
            max_models=50,  # fuzzed model names: the state of 50 models, not of 1,000
        )  # fmt: skip
        self.exporter.start()
        self.processor.start()
        self.payloads = self.accepted = self.rejected = self.refused = 0

    def feed(self, payload: bytes) -> None:
        from segwatch.collector.decode.fast_reader import scan_request
        from segwatch.collector.decode.reference_reader import decode_request
        from segwatch.collector.errors import PermanentError

        self.payloads += 1
        try:
            result = self.processor.consume(payload)
        except PermanentError:
            self.refused += 1
            return
        self.accepted += result.accepted
        self.rejected += result.rejected
        fast = scan_request(payload)
        if fast is not None:  # the differential: both readers agree on what they accept
            try:
                parsed = ExportTraceServiceRequest.FromString(payload)
            except DecodeError:
                # Bad UTF-8 in an attribute the fast path never reads (http.method, say): it
                # takes the request, by design; every string it stores is checked.
                return
            reference = decode_request(parsed)
            assert len(fast) == len(reference)  # (the processor also applied its lateness)
            assert fast.span_ids == reference.span_ids
            assert fast.rejected_spans == reference.rejected_spans

    def close(self) -> None:
        self.processor.shutdown()
        self.exporter.shutdown()
        self.spool.close()
