"""The reference reader: OTLP trace requests, as protobuf objects, → columnar model-call rows.

It reads every request the convention allows, one span and one attribute at
a time: the fast reader (:mod:`.fast_reader`) reads the common shape of a
request with numpy and leaves the rest to it (batch spans, ``ml.batch.*``,
maps and bytes, repeated keys, irregular spans), and it defines what the fast
reader must give (a differential test holds them to the same batch). Each
span with ``ml.model.name`` becomes one row (a batch span many, see
:mod:`.batch_spans`); each ``ml.feature.*``, ``ml.output.*`` and
``ml.metric.*`` attribute is appended to its quantity's column
(``feature.amount``, ...), and each ``ml.context.*`` attribute to a context
column. Each attribute is read once (a batch span's once more, whole) and no
per-row dict is built: the aggregator works on the columns with numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from segwatch.collector.config.limits import NO_LIMITS, RequestLimits
from segwatch.collector.model_calls import Column, ModelCallBatch, ModelKey, SpanOrigin
from segwatch.instrumentation import attributes as attr

from .batch_spans import BatchSpanError, decode_batch_span
from .raw_spans import ParsedSpans

__all__ = [
    "ABSENT",
    "DEFAULT_STAGE",
    "decode_request",
    "double_text",
    "rejection_reason",
    "service_name",
]

DEFAULT_STAGE = "serving"
ABSENT: Any = object()
"""The name of a span that has no ``ml.model.name`` at all (not even an empty one)."""
_SKIP = object()
_BATCH = object()

_FEATURE = attr.ML_FEATURE_PREFIX
_OUTPUT = attr.ML_OUTPUT_PREFIX
_METRIC = attr.ML_METRIC_PREFIX
_CONTEXT = attr.ML_CONTEXT_PREFIX
_QUANTITY_PREFIXES = (_FEATURE, _OUTPUT, _METRIC)
_NAME = attr.ML_MODEL_NAME
_VERSION = attr.ML_MODEL_VERSION
_STAGE = attr.ML_MODEL_STAGE
_OPERATION = attr.ML_OPERATION
_PREDICTION_ID = attr.ML_PREDICTION_ID
_WEIGHT = attr.ML_SAMPLE_WEIGHT
_MODEL_FIELDS = frozenset({_NAME, _VERSION, _STAGE, _OPERATION, _PREDICTION_ID, _WEIGHT})
_BATCH_FIELDS = frozenset({attr.ML_BATCH_SIZE, attr.ML_BATCH_COLUMNS})


def service_name(resource: Any) -> str:
    """The ``service.name`` attribute of an OTLP resource, or empty."""
    for kv in resource.attributes:
        if kv.key == "service.name":
            return str(kv.value.string_value)
    return ""


def decode_request(
    request: ExportTraceServiceRequest, oldest_ns: int = 0, limits: RequestLimits = NO_LIMITS
) -> ModelCallBatch:
    """Extract the model calls of a request; spans without ``ml.model.name`` are skipped.

    A span whose ``ml.model.name`` is not a non-empty string, or that started
    before ``oldest_ns`` (the allowed lateness), is rejected (counted, with a
    reason, for the OTLP partial-success answer). Late spans that are not that
    late land in their own minute bucket, and ClickHouse merges them there.
    Array values make a span a batch span (see :mod:`.batch_spans`); values of
    a type the convention does not allow (maps, bytes) are ignored and counted
    in ``ignored_values``. A model-call span over the ``limits`` is rejected;
    a request of too many spans is refused (:class:`PermanentError`).
    """
    limits.check_span_count(
        sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    )
    reader = _RequestReader(oldest_ns, limits)
    for resource_spans in request.resource_spans:
        service = service_name(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            reader.origin = (resource_spans.resource, scope_spans.scope)
            for span in scope_spans.spans:
                reader.read_span(span, service)
    return reader.finish()


@dataclass(slots=True)
class _SpanValues:
    """What one span's attributes say: its model fields, and what its values did to the columns."""

    name: Any = ABSENT  # None: present but not a string
    version: str = ""
    stage: str = DEFAULT_STAGE
    operation: str = ""
    prediction_id: str = ""
    weight: float = 1.0
    appended: bool = False  # a quantity or context attribute was met (its value appended)
    is_batch: bool = False  # an array value or an ml.batch.* key: a batch span

    def set_field(self, field: str, value: Any, kind: str | None) -> None:
        """Take the value of the model field ``field`` (an ``ml.*`` attribute name)."""
        if field == _NAME:
            self.name = value.string_value if kind == "string_value" else None
        elif field == _VERSION:
            self.version = _as_text(value, kind)
        elif field == _STAGE:
            self.stage = _as_text(value, kind) or DEFAULT_STAGE
        elif field == _OPERATION:
            self.operation = _as_text(value, kind)
        elif field == _WEIGHT:
            self.weight = _as_weight(value, kind)
        else:
            self.prediction_id = _as_text(value, kind)


class _RequestReader:
    """The batch of one request, filled span by span, and what it learned of the request's keys."""

    def __init__(self, oldest_ns: int, limits: RequestLimits) -> None:
        self.batch = ModelCallBatch()
        self.oldest_ns = oldest_ns
        self.limits = limits
        self.model_ids: dict[ModelKey, int] = {}
        # Each attribute key is classified once per request: a Column to append
        # to, the name of a model field, _BATCH or _SKIP. Spans repeat the same keys.
        self.targets: dict[str, Column | str | object] = {}
        # The spans the rows came from (raw_spans), with their resource and scope.
        self.origin: tuple[Any, Any] = (None, None)
        self.spans: list[Any] = []
        self.origins: list[tuple[Any, Any]] = []
        self.span_of_row: list[int] = []

    def finish(self) -> ModelCallBatch:
        """The batch, with the spans its rows came from."""
        if self.spans:
            source = ParsedSpans(self.spans, self.origins)
            span_of_row = np.asarray(self.span_of_row, dtype=np.int64)
            self.batch.span_origins.append(SpanOrigin(0, span_of_row, source))
        return self.batch

    def target(self, key: str) -> Column | str | object:
        """Where values of attribute ``key`` go (classified once per request)."""
        target = self.targets.get(key)
        if target is None:
            target = self.targets[key] = _classify(key, self.batch)
        return target

    def read_span(self, span: Any, service: str) -> None:
        """Add the span's model call (or a batch span's calls), reject it with a reason, or skip it.

        The span's values are appended to the columns as its attributes are
        read, and taken back if it turns out to be a batch span (read again,
        whole, by :func:`.batch_spans.decode_batch_span`) or not a usable call.
        """
        batch = self.batch
        row = len(batch.start_ns)
        values = self._read_attributes(span, row)
        if values.appended and values.is_batch:
            _undo_row(batch, row)  # decode_batch_span re-reads every value
        if values.name is ABSENT and not values.appended and not values.is_batch:
            return  # not a model call at all
        limits = self.limits
        reason = _limit_problem(span, limits) or rejection_reason(
            span, values.name, values.weight, self.oldest_ns, limits.newest_ns
        )
        if reason:
            if values.appended and not values.is_batch:
                _undo_row(batch, row)  # not a usable call: keep none of its values
            batch.reject(reason)
            return
        n, row_ids = 1, None
        if values.is_batch:
            rows = self._read_batch_span(span, row)
            if rows is None:
                return
            n, row_ids = rows
        self._add_rows(span, service, values, n, row_ids)

    def _read_attributes(self, span: Any, row: int) -> _SpanValues:
        """Append the span's quantity and context values at ``row``; its model fields and flags."""
        batch, targets = self.batch, self.targets
        values = _SpanValues()
        for kv in span.attributes:
            key = kv.key
            target = targets.get(key)
            if target is None:
                target = targets[key] = _classify(key, batch)
            if target is _SKIP:
                continue
            if target is _BATCH:
                values.is_batch = True
                continue
            value = kv.value
            kind = value.WhichOneof("value")
            if target.__class__ is str:
                values.set_field(target, value, kind)
                continue
            column: Column = target  # type: ignore[assignment]
            values.appended = True
            if kind == "double_value":
                column.number_rows.append(row)
                column.numbers.append(value.double_value)
            elif kind == "int_value":
                column.number_rows.append(row)
                column.numbers.append(float(value.int_value))
            elif kind == "string_value":
                column.label_rows.append(row)
                column.labels.append(value.string_value)
            elif kind == "bool_value":
                column.label_rows.append(row)
                column.labels.append("true" if value.bool_value else "false")
            elif kind == "array_value":
                values.is_batch = True  # read by decode_batch_span
            elif kind is not None:
                batch.ignored_values += 1
        return values

    def _read_batch_span(self, span: Any, row: int) -> tuple[int, list[str] | None] | None:
        """A batch span's rows from ``row`` on (and ids), or None: rejected with the reason."""
        limits = self.limits
        try:
            room = None  # the calls the request may still bring
            if limits.max_spans_per_request:
                room = max(0, limits.max_spans_per_request - len(self.batch.start_ns))
            return decode_batch_span(span, self.batch, self.target, row, room)
        except BatchSpanError as exc:
            self.batch.reject(f"span {span.name!r}: {exc}")
            return None

    def _add_rows(
        self, span: Any, service: str, values: _SpanValues, n: int, row_ids: list[str] | None
    ) -> None:
        """The span's ``n`` rows: model, times, ids, operation, prediction ids, weight."""
        batch = self.batch
        key = (values.name, values.version, values.stage)
        index = self.model_ids.get(key)
        if index is None:
            index = self.model_ids[key] = len(batch.models)
            batch.models.append(key)
        start = span.start_time_unix_nano
        self.span_of_row.extend([len(self.spans)] * n)
        self.spans.append(span)
        self.origins.append(self.origin)
        if n == 1:
            batch.model_index.append(index)
            batch.start_ns.append(start)
            batch.duration_ns.append(max(0, span.end_time_unix_nano - start))
            batch.trace_ids.append(span.trace_id)
            batch.span_ids.append(span.span_id)
            batch.operations.append(values.operation)
            batch.prediction_ids.append(values.prediction_id)
            batch.service_names.append(service)
            batch.weights.append(values.weight)
        else:
            batch.model_index.extend([index] * n)
            batch.start_ns.extend([start] * n)
            batch.duration_ns.extend([max(0, span.end_time_unix_nano - start)] * n)
            batch.trace_ids.extend([span.trace_id] * n)
            batch.span_ids.extend([span.span_id] * n)
            batch.operations.extend([values.operation] * n)
            batch.prediction_ids.extend(row_ids or [values.prediction_id] * n)
            batch.service_names.extend([service] * n)
            batch.weights.extend([values.weight] * n)


def _classify(key: str, batch: ModelCallBatch) -> Column | str | object:
    """Where values of attribute ``key`` go: a column, a model field's name, or nowhere."""
    if key in _MODEL_FIELDS:
        return key
    if key in _BATCH_FIELDS:
        return _BATCH
    if key.startswith(_QUANTITY_PREFIXES):
        table = batch.quantities
    elif key.startswith(_CONTEXT):
        table = batch.contexts
    else:
        return _SKIP
    if key.endswith("."):
        return _SKIP  # ml.feature. with no name: nothing to call it
    column = table.get(key[3:])
    if column is None:
        column = table[key[3:]] = Column()
    return column


def _limit_problem(span: Any, limits: RequestLimits) -> str:
    if not (limits.max_attributes_per_span or limits.max_attribute_bytes):
        return ""
    attributes = span.attributes
    largest = max((kv.ByteSize() for kv in attributes), default=0)
    return limits.span_problem(span.name, len(attributes), largest)


MAX_TIME_NS = (2**32 - 86400 * 366) * 10**9
"""Span times at or past it (2105) are refused: ClickHouse's ``DateTime`` (the raw calls'
retention TTL, the roll-ups' hours) ends in 2106, and ``DateTime64(9)`` in 2262."""


def rejection_reason(
    span: Any, name: Any, weight: float, oldest_ns: int, newest_ns: int = 0
) -> str:
    """Why a span with ml.* values is not a usable model call, or ``""``."""
    if name is ABSENT or not name:
        return f"span {span.name!r}: {_NAME} must be a non-empty string"
    if not weight > 0:  # NaN fails this too
        return f"span {span.name!r}: {_WEIGHT} must be a positive finite number"
    if span.start_time_unix_nano >= MAX_TIME_NS or span.end_time_unix_nano >= MAX_TIME_NS:
        return f"span {span.name!r}: its times are past the year 2105"
    if newest_ns and span.start_time_unix_nano > newest_ns:
        return f"span {span.name!r} starts in the future, past the allowed clock skew"
    if span.start_time_unix_nano < oldest_ns:
        return f"span {span.name!r} started before the allowed lateness"
    return ""


def _as_weight(value: Any, kind: str | None) -> float:
    """``ml.sample.weight`` as a float; 0 (rejected) when it is not a positive finite number."""
    if kind == "double_value":
        number = float(value.double_value)
    elif kind == "int_value":
        number = float(value.int_value)
    else:
        return 0.0
    return number if math.isfinite(number) else 0.0


def _as_text(value: Any, kind: str | None) -> str:
    if kind == "string_value":
        return str(value.string_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return double_text(value.double_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    return ""


def double_text(number: float) -> str:
    """A double sent where text is meant (a version, an id): ``2.0`` reads ``2``."""
    return str(int(number)) if math.isfinite(number) and number.is_integer() else str(number)


def _undo_row(batch: ModelCallBatch, row: int) -> None:
    """Take back the values appended by a span that turned out not to be a valid model call."""
    for column in (*batch.quantities.values(), *batch.contexts.values()):
        while column.number_rows and column.number_rows[-1] == row:
            column.number_rows.pop()
            column.numbers.pop()
        while column.label_rows and column.label_rows[-1] == row:
            column.label_rows.pop()
            column.labels.pop()
