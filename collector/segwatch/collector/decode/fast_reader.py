"""Reading OTLP trace requests with numpy: the fast reader of the decode stage.

:func:`.request_layout.read_layout` finds where each span sits in the
request's bytes (the levels above the spans walked like the spans, no Python
object per span); :class:`.span_table.SpanTable` walks the spans' fields for
all spans at once, in place, and finds their attributes;
:class:`.key_values.KeyValues` reads those attributes at once: where each key
and value sits, the value kinds, the numbers, and the strings, factorized by
hash. This module turns them into model calls: it classifies each distinct
key once, reads each span's model fields, accepts or rejects each span, and
hands the quantities and contexts over as whole chunks of rows. Python touches
each distinct key and each distinct string once, and each accepted span a few
times, but never each attribute.

Anything outside the common shape makes :func:`scan_request` return None and
the caller reads the request with :func:`.reference_reader.decode_request`:
array values (batch spans), ``ml.batch.*`` keys, map or bytes values, a key
repeated within a span, a key longer than :data:`.wire.KEY_WIDTH`, fields out
of canonical order, keys or strings that are not valid UTF-8, irregular spans
(see :mod:`.span_table`) or levels above them (see :mod:`.request_layout`),
malformed bytes. Both give the same batch; a differential test
(tests/collector/test_span_scan.py) holds them to it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from segwatch.collector.config.limits import NO_LIMITS, RequestLimits
from segwatch.collector.model_calls import Column, LabelChunk, ModelCallBatch, ModelKey, SpanOrigin
from segwatch.instrumentation import attributes as attr

from .key_values import (
    BOOL_VALUE,
    DOUBLE_VALUE,
    INT_VALUE,
    NO_VALUE,
    STRING_VALUE,
    KeyValues,
    StringValues,
)
from .raw_spans import SerializedSpans
from .reference_reader import ABSENT, DEFAULT_STAGE, MAX_TIME_NS, double_text, rejection_reason
from .request_layout import RequestLayout, read_layout
from .span_table import SpanTable
from .wire import NotSimple, varints

__all__ = ["scan_request"]

# What an attribute key is, once classified (per distinct key).
_SKIP, _COLUMN, _NAME, _VERSION, _STAGE, _OPERATION, _PREDICTION_ID, _WEIGHT = range(8)
_MODEL_FIELDS = {
    attr.ML_MODEL_NAME: _NAME,
    attr.ML_MODEL_VERSION: _VERSION,
    attr.ML_MODEL_STAGE: _STAGE,
    attr.ML_OPERATION: _OPERATION,
    attr.ML_PREDICTION_ID: _PREDICTION_ID,
    attr.ML_SAMPLE_WEIGHT: _WEIGHT,
}
_BATCH_FIELDS = frozenset({attr.ML_BATCH_SIZE, attr.ML_BATCH_COLUMNS})
_COLUMN_PREFIXES = (
    attr.ML_FEATURE_PREFIX,
    attr.ML_OUTPUT_PREFIX,
    attr.ML_METRIC_PREFIX,
    attr.ML_CONTEXT_PREFIX,
)


def scan_request(
    payload: bytes, oldest_ns: int = 0, limits: RequestLimits = NO_LIMITS
) -> ModelCallBatch | None:
    """The model calls of a serialized request, or None when the reference reader must read it.

    Same contract as :func:`.reference_reader.decode_request`, which gives the
    same batch for every request this function accepts. Malformed bytes give
    None too: the caller's protobuf parse then names the error.
    """
    try:
        return _scan(payload, oldest_ns, limits)
    except (DecodeError, NotSimple):
        return None


def _scan(payload: bytes, oldest_ns: int, limits: RequestLimits) -> ModelCallBatch:
    layout = read_layout(payload)
    limits.check_span_count(len(layout))
    batch = ModelCallBatch()
    if not len(layout):
        return batch
    spans = SpanTable.read(layout.data, layout.buf, layout.span_start, layout.span_stop)
    spans.check_names()
    if not len(spans.kv_span):
        return batch
    kvs = KeyValues.read(spans.buf, spans.kv_span, spans.kv_start, spans.kv_stop)
    kinds, columns = _classify_keys(kvs.key_names, batch)
    key_kind = kinds[kvs.key_codes]
    relevant = key_kind != _SKIP
    _refuse_repeated_keys(kvs.span[relevant], kvs.key_codes[relevant], len(kvs.key_names))
    strings = StringValues.read(kvs, relevant)

    n_spans = len(spans)
    has_column = np.zeros(n_spans, dtype=bool)
    has_column[kvs.span[key_kind == _COLUMN]] = True
    fields = _ModelFields(n_spans)
    for kind in (_NAME, _VERSION, _STAGE, _OPERATION, _PREDICTION_ID, _WEIGHT):
        fields.read(kind, np.flatnonzero(key_kind == kind), kvs, strings)
    is_call = has_column | fields.has_name
    if not is_call.any():
        return batch

    accepted = _accept(batch, spans, np.flatnonzero(is_call), fields, oldest_ns, limits)
    row_of_span = np.full(n_spans, -1, dtype=np.int64)
    row_of_span[accepted] = np.arange(len(accepted), dtype=np.int64)
    _fill_rows(batch, spans, layout, accepted, fields)
    _fill_columns(batch, columns, kvs, key_kind, row_of_span, strings)
    if len(accepted):
        source = SerializedSpans(
            layout.data, layout.span_start, layout.span_stop, layout.origin_of_span, layout.origins
        )
        batch.span_origins.append(SpanOrigin(0, accepted, source))
    return batch


def _classify_keys(
    names: list[str], batch: ModelCallBatch
) -> tuple[npt.NDArray[np.int64], dict[int, Column]]:
    """The kind of each distinct key, and its column for quantities and contexts.

    ``names`` come in the order the keys first appear in the request, so the
    columns are created in the reference reader's order.
    """
    kinds = np.zeros(len(names), dtype=np.int64)
    columns: dict[int, Column] = {}
    for code, key in enumerate(names):
        if key in _BATCH_FIELDS:
            raise NotSimple
        kind = _MODEL_FIELDS.get(key)
        if kind is not None:
            kinds[code] = kind
        elif key.startswith(_COLUMN_PREFIXES) and not key.endswith("."):
            kinds[code] = _COLUMN
            context = key.startswith(attr.ML_CONTEXT_PREFIX)
            table = batch.contexts if context else batch.quantities
            columns[code] = table[key[3:]] = Column()
    return kinds, columns


def _refuse_repeated_keys(
    spans: npt.NDArray[np.int64], keys: npt.NDArray[np.int64], n_keys: int
) -> None:
    pairs = np.sort(spans * n_keys + keys, kind="stable")  # runs per span: cheap to sort
    if (np.diff(pairs) == 0).any():
        raise NotSimple  # the reference reader defines what a repeated key means


class _ModelFields:
    """The model fields of every span (name, version, stage, operation, prediction id, weight)."""

    def __init__(self, n_spans: int) -> None:
        self.has_name = np.zeros(n_spans, dtype=bool)
        self.name = np.full(n_spans, None, dtype=object)  # None: absent or not a string
        self.version = np.full(n_spans, "", dtype=object)
        self.stage = np.full(n_spans, "", dtype=object)
        self.operation = np.full(n_spans, "", dtype=object)
        self.prediction_id = np.full(n_spans, "", dtype=object)
        self.weight = np.ones(n_spans, dtype=np.float64)

    def read(
        self, kind: int, at: npt.NDArray[np.int64], kvs: KeyValues, strings: StringValues
    ) -> None:
        if not len(at):
            return
        spans = kvs.span[at]
        value_kind = kvs.kind[at]
        if kind == _WEIGHT:
            number = (value_kind == DOUBLE_VALUE) | (value_kind == INT_VALUE)
            weight = np.where(number, kvs.numbers(at), 0.0)
            weight[~np.isfinite(weight)] = 0.0
            self.weight[spans] = weight
            return
        is_string = value_kind == STRING_VALUE
        if kind == _NAME:
            self.has_name[spans] = True
            names = np.full(len(at), None, dtype=object)
            names[is_string] = strings.values[strings.code[at[is_string]]]
            self.name[spans] = names
            return
        texts = np.empty(len(at), dtype=object)
        texts[is_string] = strings.values[strings.code[at[is_string]]]
        others = np.flatnonzero(~is_string)
        if len(others):  # rare: a version or an id sent as a number or a bool
            texts[others] = [_as_text(kvs, i) for i in at[others].tolist()]
        target = {_VERSION: self.version, _STAGE: self.stage, _OPERATION: self.operation,
                  _PREDICTION_ID: self.prediction_id}[kind]  # fmt: skip
        target[spans] = texts


def _as_text(kvs: KeyValues, i: int) -> str:
    """A non-string model field as text, exactly as the reference reader writes it."""
    kind = kvs.kind[i]
    if kind == NO_VALUE:
        return ""
    at = np.array([i], dtype=np.int64)
    if kind == DOUBLE_VALUE:
        return double_text(float(kvs.numbers(at)[0]))
    integer = int(varints(kvs.buf, kvs.payload[at])[0].view(np.int64)[0])
    if kind == BOOL_VALUE:
        return "true" if integer else "false"
    return str(integer)


def _accept(
    batch: ModelCallBatch,
    spans: SpanTable,
    candidates: npt.NDArray[np.int64],
    fields: _ModelFields,
    oldest_ns: int,
    limits: RequestLimits,
) -> npt.NDArray[np.int64]:
    """The candidate spans that are usable model calls; the others are rejected with a reason."""
    attributes, largest, over = limits.spans_over(
        spans.kv_span, spans.kv_stop - spans.kv_start, len(spans)
    )
    usable = fields.name[candidates].astype(bool)  # a name, and not empty: truth, per object
    usable &= fields.weight[candidates] > 0
    usable &= ~over[candidates]
    usable &= spans.start_ns[candidates] < np.uint64(MAX_TIME_NS)
    usable &= spans.end_ns[candidates] < np.uint64(MAX_TIME_NS)
    if oldest_ns > 0:
        usable &= spans.start_ns[candidates] >= np.uint64(oldest_ns)
    if limits.newest_ns > 0:
        usable &= spans.start_ns[candidates] <= np.uint64(limits.newest_ns)
    for i in candidates[~usable].tolist():
        view = spans.view(i)
        name = fields.name[i] if fields.has_name[i] else ABSENT
        batch.reject(
            limits.span_problem(view.name, int(attributes[i]), int(largest[i]))
            or rejection_reason(view, name, float(fields.weight[i]), oldest_ns, limits.newest_ns)
        )
    accepted: npt.NDArray[np.int64] = candidates[usable]
    return accepted


def _fill_rows(
    batch: ModelCallBatch,
    spans: SpanTable,
    layout: RequestLayout,
    accepted: npt.NDArray[np.int64],
    fields: _ModelFields,
) -> None:
    """One row per accepted span: model, times, ids, operation, prediction id, weight."""
    stages = fields.stage[accepted]
    stages[stages == ""] = DEFAULT_STAGE
    _add_models(batch, fields.name[accepted], fields.version[accepted], stages)
    start, end = spans.start_ns[accepted], spans.end_ns[accepted]
    batch.start_ns = start.tolist()
    batch.duration_ns = np.where(end > start, end - start, 0).tolist()
    batch.trace_ids = spans.trace_ids(accepted)
    batch.span_ids = spans.span_ids(accepted)
    batch.operations = fields.operation[accepted].tolist()
    batch.prediction_ids = fields.prediction_id[accepted].tolist()
    services = layout.services
    if len(services) == 1:  # one resource and one scope: the common case
        batch.service_names = services * len(accepted)
    else:
        batch.service_names = [services[i] for i in layout.origin_of_span[accepted].tolist()]
    batch.weights = fields.weight[accepted].tolist()


def _add_models(
    batch: ModelCallBatch,
    names: npt.NDArray[np.object_],
    versions: npt.NDArray[np.object_],
    stages: npt.NDArray[np.object_],
) -> None:
    """Each row's model (name, version, stage), the models numbered as they first appear."""
    columns = (names, versions, stages)
    if len(names) and all(bool((column == column[0]).all()) for column in columns):
        batch.model_index.extend([len(batch.models)] * len(names))  # the common case: one model
        batch.models.append((names[0], versions[0], stages[0]))
        return
    model_ids: dict[ModelKey, int] = {}
    for key in zip(names.tolist(), versions.tolist(), stages.tolist(), strict=True):
        index = model_ids.get(key)
        if index is None:
            index = model_ids[key] = len(batch.models)
            batch.models.append(key)
        batch.model_index.append(index)


def _fill_columns(
    batch: ModelCallBatch,
    columns: dict[int, Column],
    kvs: KeyValues,
    key_kind: npt.NDArray[np.int64],
    row_of_span: npt.NDArray[np.int64],
    strings: StringValues,
) -> None:
    """Each quantity's and context's values, as one chunk of (rows, values) per column."""
    valued = kvs.kind != NO_VALUE
    at = np.flatnonzero((key_kind == _COLUMN) & (row_of_span[kvs.span] >= 0) & valued)
    at = at[_stable_order(kvs.key_codes[at], len(kvs.key_names))]  # by key, then in row order
    keys = kvs.key_codes[at]
    rows = row_of_span[kvs.span[at]]
    kind = kvs.kind[at]
    is_number = (kind == DOUBLE_VALUE) | (kind == INT_VALUE)
    numbers = np.zeros(len(at), dtype=np.float64)
    numbers[is_number] = kvs.numbers(at[is_number])
    # Labels as codes into the request's strings, then "false" and "true" for booleans.
    label_codes = np.zeros(len(at), dtype=np.int64)
    is_string = kind == STRING_VALUE
    label_codes[is_string] = strings.code[at[is_string]]
    is_bool = kind == BOOL_VALUE
    if is_bool.any():
        label_codes[is_bool] = len(strings.values) + (kvs.numbers(at[is_bool]) != 0)
    dictionary: list[str] = [*strings.values.tolist(), "false", "true"]
    bounds = np.flatnonzero(np.diff(keys)) + 1
    for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(at)], strict=True):
        if lo == hi:
            continue
        column = columns[int(keys[lo])]
        number = is_number[lo:hi]
        if number.any():
            column.number_chunks.append((rows[lo:hi][number], numbers[lo:hi][number]))
        if not number.all():
            label = ~number
            distinct, codes = np.unique(label_codes[lo:hi][label], return_inverse=True)
            column.label_chunks.append(
                LabelChunk(rows[lo:hi][label], codes.astype(np.int64),
                           [dictionary[i] for i in distinct.tolist()])
            )  # fmt: skip


def _stable_order(codes: npt.NDArray[np.int64], distinct: int) -> npt.NDArray[np.intp]:
    """``np.argsort(codes, kind="stable")`` for codes in ``[0, distinct)``: as 16-bit
    integers when they fit, which numpy sorts by radix, several times faster."""
    if distinct <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    return np.argsort(codes, kind="stable")
