"""Rows of ``otel_traces``: model-call spans as the OpenTelemetry Collector's
``clickhouseexporter`` writes them, so the trace views built on its schema open them.

Which spans (:func:`traced_rows`): the calls of a sampled share of traces,
chosen by trace id as OTel's ``TraceIdRatioBased`` sampler chooses (its low 8
bytes below ``sample`` × 2⁶⁴: :func:`sampled_rows`), and every call whose trace
id an aggregate row keeps as an exemplar, so each trace id an anomaly names is
there. The aggregator takes a segment's exemplar from the sampled calls when it
has one, so most exemplars cost no span of their own. How
(:func:`trace_rows`): each chosen span is parsed back from what the reader kept
(:class:`~segwatch.collector.model_calls.SpanOrigin`) and written once (a batch
span's calls share one span), its values as the exporter renders them: hex ids,
``SpanKind``/``StatusCode`` names as ``Internal``/``Unset``, attribute values
as strings (numbers as JavaScript prints them, arrays and maps as JSON, bytes
as base64).

Thread contract: called on the flusher thread, on a batch no other thread changes.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from segwatch.collector.model_calls import ModelCallBatch, SpanRecord

from .aggregate_rows import AggregateRows
from .native import Coded
from .rows import TableRows

__all__ = [
    "TRACE_SCHEMA",
    "TraceRows",
    "exemplar_trace_ids",
    "sampled_rows",
    "trace_rows",
    "traced_rows",
]

_logger = logging.getLogger(__name__)

TRACE_SCHEMA: Final = {
    "Timestamp": "DateTime64(9)",
    "TraceId": "String",
    "SpanId": "String",
    "ParentSpanId": "String",
    "TraceState": "String",
    "SpanName": "LowCardinality(String)",
    "SpanKind": "LowCardinality(String)",
    "ServiceName": "LowCardinality(String)",
    "ResourceAttributes": "Map(LowCardinality(String), String)",
    "ScopeName": "String",
    "ScopeVersion": "String",
    "SpanAttributes": "Map(LowCardinality(String), String)",
    "Duration": "UInt64",
    "StatusCode": "LowCardinality(String)",
    "StatusMessage": "String",
    "Events.Timestamp": "Array(DateTime64(9))",
    "Events.Name": "Array(LowCardinality(String))",
    "Events.Attributes": "Array(Map(LowCardinality(String), String))",
    "Links.TraceId": "Array(String)",
    "Links.SpanId": "Array(String)",
    "Links.TraceState": "Array(String)",
    "Links.Attributes": "Array(Map(LowCardinality(String), String))",
}
"""The columns the exporter inserts (migration 0013), in its order, with their types."""

_SPAN_KINDS: Final = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_STATUS_CODES: Final = ("Unset", "Ok", "Error")
_LOW_64: Final = 1 << 64


class TraceRows(TableRows):
    """Rows of ``otel_traces``; ``unread``: chosen spans that could not be read back."""

    table = "otel_traces"
    column_names = tuple(TRACE_SCHEMA)
    column_types = tuple(TRACE_SCHEMA.values())

    def __init__(self) -> None:
        super().__init__()
        self.unread = 0


def exemplar_trace_ids(aggregates: AggregateRows) -> set[bytes]:
    """The trace ids aggregate rows keep as exemplars (their ``exemplar_trace_ids``: one per
    row, as codes into the flush's trace ids)."""
    exemplars: Coded = aggregates.columns["exemplar_trace_ids"].values
    return {bytes.fromhex(exemplars.dictionary[i]) for i in np.unique(exemplars.codes).tolist()}


def sampled_rows(batch: ModelCallBatch, sample: float) -> npt.NDArray[np.bool_]:
    """Per row, whether its trace is in the sample (TraceIdRatioBased's decision)."""
    regular, words = _trace_id_words(batch.trace_ids)
    if sample >= 1:
        return np.ones(len(regular), dtype=bool)
    if sample <= 0:
        return np.zeros(len(regular), dtype=bool)
    return regular & (words[:, 1] < np.uint64(round(sample * _LOW_64)))


def traced_rows(
    batch: ModelCallBatch,
    sample: float,
    exemplars: set[bytes],
    sampled: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.int64]:
    """The rows whose spans go to ``otel_traces``: sampled by trace id (``sampled``, when
    the caller has it already), or exemplars."""
    chosen = sampled_rows(batch, sample) if sampled is None else sampled.copy()
    wanted = [e for e in exemplars if len(e) == 16]
    if wanted:
        regular, words = _trace_id_words(batch.trace_ids)
        pairs = np.frombuffer(b"".join(wanted), dtype=">u8").astype(np.uint64).reshape(-1, 2)
        maybe = regular & np.isin(words[:, 1], pairs[:, 1])  # then the exact id, on few rows
        ids = batch.trace_ids
        candidates = np.flatnonzero(maybe & ~chosen).tolist()
        chosen[[i for i in candidates if ids[i] in exemplars]] = True
    return np.flatnonzero(chosen)


def _trace_id_words(
    trace_ids: Sequence[bytes],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint64]]:
    """Which trace ids are 16 bytes, and each one's two big-endian 64-bit words."""
    n = len(trace_ids)
    joined = b"".join(trace_ids)
    if len(joined) == 16 * n:  # the rule: every id 16 bytes, read without a loop
        words = np.frombuffer(joined, dtype=">u8").astype(np.uint64).reshape(n, 2)
        return np.ones(n, dtype=bool), words
    regular = np.fromiter((len(t) == 16 for t in trace_ids), dtype=bool, count=n)
    words = np.zeros((n, 2), dtype=np.uint64)
    kept = b"".join(t for t, ok in zip(trace_ids, regular.tolist(), strict=True) if ok)
    words[regular] = np.frombuffer(kept, dtype=">u8").reshape(-1, 2)
    return regular, words


def trace_rows(batch: ModelCallBatch, rows: npt.NDArray[np.int64]) -> TraceRows:
    """One row per distinct span behind ``rows`` (a batch span's calls share their span)."""
    out = TraceRows()
    if not len(rows):
        return out
    resources: dict[int, dict[str, str]] = {}  # by the attributes list, shared per resource
    for record in _records(batch, rows, out):
        key = id(record.resource_attributes)
        resource = resources.get(key)
        if resource is None:
            resource = resources[key] = _attribute_map(record.resource_attributes)
        _append(out.columns, record, resource)
    return out


def _records(
    batch: ModelCallBatch, rows: npt.NDArray[np.int64], out: TraceRows
) -> Iterable[SpanRecord]:
    """The spans behind ``rows``, parsed; those of a request whose bytes cannot be read
    back from the spool (its segment lost or cut short) are counted in ``out.unread``
    and skipped, so they cost their own spans, not the other requests'."""
    for origin in batch.span_origins:
        first = origin.first_row
        lo, hi = np.searchsorted(rows, [first, first + len(origin.span_of_row)]).tolist()
        if lo == hi:
            continue
        spans = np.unique(origin.span_of_row[rows[lo:hi] - first]).tolist()
        for done, span in enumerate(spans):
            try:
                record = origin.source.record(span)
            except (OSError, DecodeError) as exc:
                out.unread += len(spans) - done
                _logger.warning("%d spans for otel_traces could not be read back from the "
                                "spool: %s", len(spans) - done, exc)  # fmt: skip
                break
            yield record


def _append(c: dict[str, Any], record: SpanRecord, resource: dict[str, str]) -> None:
    span, scope = record.span, record.scope
    c["Timestamp"].append(span.start_time_unix_nano)
    c["TraceId"].append(span.trace_id.hex())
    c["SpanId"].append(span.span_id.hex())
    c["ParentSpanId"].append(span.parent_span_id.hex())
    c["TraceState"].append(span.trace_state)
    c["SpanName"].append(span.name)
    c["SpanKind"].append(_name(_SPAN_KINDS, span.kind))
    c["ServiceName"].append(resource.get("service.name", ""))
    c["ResourceAttributes"].append(resource)
    c["ScopeName"].append(scope.name if scope is not None else "")
    c["ScopeVersion"].append(scope.version if scope is not None else "")
    c["SpanAttributes"].append(_attribute_map(span.attributes))
    c["Duration"].append(max(0, span.end_time_unix_nano - span.start_time_unix_nano))
    c["StatusCode"].append(_name(_STATUS_CODES, span.status.code))
    c["StatusMessage"].append(span.status.message)
    c["Events.Timestamp"].append([e.time_unix_nano for e in span.events])
    c["Events.Name"].append([e.name for e in span.events])
    c["Events.Attributes"].append([_attribute_map(e.attributes) for e in span.events])
    c["Links.TraceId"].append([link.trace_id.hex() for link in span.links])
    c["Links.SpanId"].append([link.span_id.hex() for link in span.links])
    c["Links.TraceState"].append([link.trace_state for link in span.links])
    c["Links.Attributes"].append([_attribute_map(link.attributes) for link in span.links])


def _name(names: tuple[str, ...], code: int) -> str:
    return names[code] if 0 <= code < len(names) else names[0]


def _attribute_map(attributes: Iterable[Any]) -> dict[str, str]:
    """Each attribute's value as text (:func:`_text`), with the two common kinds inline:
    a span carries dozens of attributes, and a call per value was most of their cost."""
    out: dict[str, str] = {}
    for kv in attributes:
        value = kv.value
        kind = value.WhichOneof("value")  # once: it is most of the cost of a value
        if kind == "string_value":
            out[kv.key] = value.string_value
        elif kind == "double_value":
            out[kv.key] = _number_text(value.double_value)
        else:
            out[kv.key] = _text(value, kind)
    return out


def _text(value: Any, kind: str | None) -> str:
    """An ``AnyValue`` of kind ``kind`` as the exporter writes it (pdata's ``Value.AsString``)."""
    if kind == "string_value":
        return str(value.string_value)
    if kind == "double_value":
        return _number_text(value.double_value)
    if kind in ("array_value", "kvlist_value"):
        return _json_value(value)
    return str(_plain(value, kind))


def _plain(value: Any, kind: str | None) -> Any:
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return _number_text(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return ""


def _json_value(value: Any) -> str:
    return json.dumps(_as_json(value), separators=(",", ":"), ensure_ascii=False)


def _as_json(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_as_json(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _as_json(kv.value) for kv in value.kvlist_value.values}
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else _number_text(number)
    return _plain(value, kind) if kind is not None else None


def _number_text(number: float) -> str:
    """A double as JavaScript (and the exporter) prints it: ``2`` for 2.0, ``1e-07``→``1e-7``."""
    text = repr(number)
    if "e" not in text and "n" not in text:  # most numbers: no exponent, finite
        return str(int(number)) if text.endswith(".0") else text  # -0.0 too: "0"
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        text = f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"
    return text
