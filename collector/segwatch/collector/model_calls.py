"""The decoded model calls of a request: one row per call, one column per quantity.

:class:`ModelCallBatch` is what ``decode/`` makes of a trace request (and
``profile/`` of a training set), and what ``durable/`` buffers, ``segment/``
and ``aggregate/`` read and ``store/`` writes as raw call rows: it lives at
the root because stages on both sides of the pipeline use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "Column",
    "LabelChunk",
    "ModelCallBatch",
    "ModelKey",
    "SpanOrigin",
    "SpanRecord",
    "SpanSource",
    "object_array",
]

ModelKey = tuple[str, str, str]
"""(model name, version, stage) of a model call."""


@dataclass(frozen=True)
class LabelChunk:
    """Labels of a block of rows as codes: row ``rows[i]`` has ``dictionary[codes[i]]``.

    The fast reader (:mod:`.decode.fast_reader`) and ``ml.batch.columns``
    hand their labels over this way (factorized once per request), so no later
    step touches a Python string per row.
    """

    rows: npt.NDArray[np.int64]
    codes: npt.NDArray[np.int64]
    dictionary: list[str]

    @classmethod
    def of(cls, rows: npt.NDArray[np.int64], values: Any) -> LabelChunk:
        """From the labels themselves (a list or an object array), factorized here."""
        index: dict[str, int] = {}
        codes = [index.setdefault(v, len(index)) for v in list(values)]
        return cls(rows, np.asarray(codes, dtype=np.int64), list(index))


class SpanRecord(NamedTuple):
    """One span as it was sent: the OTLP ``Span`` message, its resource's attributes
    (``KeyValue`` messages; spans of one resource share the same list object) and its
    instrumentation scope (``InstrumentationScope``)."""

    span: Any
    resource_attributes: Sequence[Any]
    scope: Any


class SpanSource(Protocol):
    """The spans of one request, as a reader left them (see :mod:`.decode.raw_spans`)."""

    def record(self, span: int) -> SpanRecord:
        """Span number ``span`` of the request, parsed (called for the few spans written)."""
        ...


@dataclass(frozen=True)
class SpanOrigin:
    """Where a block of a batch's rows came from: rows ``first_row + i`` are calls of span
    ``span_of_row[i]`` of ``source`` (a batch span's rows share one span).

    Kept so that the spans ``storage.traces`` writes to ``otel_traces`` are the spans
    as sent, not rebuilt from the model-call columns.
    """

    first_row: int
    span_of_row: npt.NDArray[np.int64]
    source: SpanSource


@dataclass
class Column:
    """One quantity's values across the rows of a batch.

    Numbers (ints and doubles, infinities included) and labels (strings and
    booleans, as ``true``/``false``) are kept apart; a row absent from both, or
    whose number is NaN, is MISSING for this quantity.
    """

    number_rows: list[int] = field(default_factory=list)
    numbers: list[float] = field(default_factory=list)
    label_rows: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    # Whole blocks of rows (batch spans, the span reader, joined batches), kept as arrays.
    number_chunks: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = field(
        default_factory=list
    )
    label_chunks: list[LabelChunk] = field(default_factory=list)
    # The parts above, joined: the aggregator reads a column several times.
    # Keyed by the lengths they were built from, so appending invalidates them.
    _number_cache: Any = field(default=None, repr=False, compare=False)
    _label_cache: Any = field(default=None, repr=False, compare=False)

    def number_data(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Rows and values of every number in the column (built once, then reused).

        NaN is left out: a row whose value is NaN is MISSING, as a row without the
        attribute is, whichever way it came (a span attribute, a batch array's element,
        an ``ml.batch.columns`` value, a training set's cell): pandas and numpy write
        missing numbers as NaN, and one missing value must not be two segments.
        """
        key = (len(self.number_rows), len(self.number_chunks))
        cached = self._number_cache
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        rows = [np.asarray(self.number_rows, dtype=np.int64), *(r for r, _ in self.number_chunks)]
        values = [np.asarray(self.numbers, dtype=np.float64), *(v for _, v in self.number_chunks)]
        all_rows, all_values = np.concatenate(rows), np.concatenate(values)
        present = ~np.isnan(all_values)
        if not present.all():
            all_rows, all_values = all_rows[present], all_values[present]
        self._number_cache = (key, all_rows, all_values)
        return all_rows, all_values

    def label_codes(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], list[str]]:
        """Rows of every label, their codes and the dictionary (built once, then reused).

        The dictionary holds each distinct label once, in the order the parts
        bring them; a label of the dictionary may have no row here.
        """
        key = (len(self.label_rows), len(self.label_chunks))
        cached = self._label_cache
        if cached is not None and cached[0] == key:
            return cached[1], cached[2], cached[3]
        index: dict[str, int] = {}
        rows = [np.asarray(self.label_rows, dtype=np.int64)]
        codes = [np.fromiter((index.setdefault(v, len(index)) for v in self.labels),
                             dtype=np.int64, count=len(self.labels))]  # fmt: skip
        for chunk in self.label_chunks:
            remap = np.fromiter((index.setdefault(v, len(index)) for v in chunk.dictionary),
                                dtype=np.int64, count=len(chunk.dictionary))  # fmt: skip
            rows.append(chunk.rows)
            codes.append(remap[chunk.codes])
        self._label_cache = (key, np.concatenate(rows), np.concatenate(codes), list(index))
        return self._label_cache[1], self._label_cache[2], self._label_cache[3]

    def label_data(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_]]:
        """Rows and values of every label in the column."""
        rows, codes, dictionary = self.label_codes()
        return rows, object_array(dictionary)[codes]


@dataclass
class ModelCallBatch:
    """The model calls of one or more requests, as columns.

    ``model_index[i]`` indexes ``models``; ``quantities`` are keyed like
    ``feature.amount``; ``contexts`` like ``context.language``.
    """

    models: list[ModelKey] = field(default_factory=list)
    model_index: list[int] = field(default_factory=list)
    start_ns: list[int] = field(default_factory=list)
    duration_ns: list[int] = field(default_factory=list)
    trace_ids: list[bytes] = field(default_factory=list)
    span_ids: list[bytes] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    prediction_ids: list[str] = field(default_factory=list)
    service_names: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # ml.sample.weight, default 1
    quantities: dict[str, Column] = field(default_factory=dict)
    contexts: dict[str, Column] = field(default_factory=dict)
    # The spans the rows came from, by blocks of rows (empty: a profile, or not kept).
    span_origins: list[SpanOrigin] = field(default_factory=list)
    rejected_spans: int = 0
    rejection_reasons: list[str] = field(default_factory=list)
    rejected_by: dict[str, int] = field(default_factory=dict)  # by reason_code()
    ignored_values: int = 0

    def __len__(self) -> int:
        return len(self.start_ns)

    def reject(self, reason: str) -> None:
        self.rejected_spans += 1
        code = reason_code(reason)
        self.rejected_by[code] = self.rejected_by.get(code, 0) + 1
        if len(self.rejection_reasons) < 5 and reason not in self.rejection_reasons:
            self.rejection_reasons.append(reason)

    @classmethod
    def concat(cls, batches: list[ModelCallBatch]) -> ModelCallBatch:
        """The rows of ``batches``, one after the other, as one batch (counters are not kept)."""
        if len(batches) == 1:
            return batches[0]
        out = cls()
        model_ids: dict[ModelKey, int] = {}
        for batch in batches:
            offset = len(out.start_ns)
            remap = []
            for model in batch.models:
                if model not in model_ids:
                    model_ids[model] = len(out.models)
                    out.models.append(model)
                remap.append(model_ids[model])
            out.model_index.extend(remap[i] for i in batch.model_index)
            for name in _ROW_FIELDS:
                getattr(out, name).extend(getattr(batch, name))
            out.span_origins.extend(
                SpanOrigin(o.first_row + offset, o.span_of_row, o.source)
                for o in batch.span_origins
            )
            for table, source in ((out.quantities, batch.quantities),
                                  (out.contexts, batch.contexts)):  # fmt: skip
                for key, column in source.items():
                    target = table.get(key)
                    if target is None:
                        target = table[key] = Column()
                    rows, numbers = column.number_data()
                    if len(rows):
                        target.number_chunks.append((rows + offset, numbers))
                    label_rows, codes, dictionary = column.label_codes()
                    if len(label_rows):
                        target.label_chunks.append(
                            LabelChunk(label_rows + offset, codes, dictionary)
                        )
        return out


def reason_code(reason: str) -> str:
    """The metric label of a rejection: ``limits``, ``late`` (or early) or ``invalid``.

    Read from the messages of :mod:`.config.limits` (which name their config
    key) and :func:`.decode.reference_reader.rejection_reason`.
    """
    if "(receiver.limits." in reason:
        return "limits"
    if "allowed lateness" in reason or "allowed clock skew" in reason:
        return "late"
    return "invalid"


_ROW_FIELDS = (
    "start_ns", "duration_ns", "trace_ids", "span_ids", "operations", "prediction_ids",
    "service_names", "weights",
)  # fmt: skip


def object_array(values: list[Any]) -> npt.NDArray[np.object_]:
    """A 1-D object array of ``values`` (never 2-D, whatever they are)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
