"""The spans a batch's rows came from, kept as the readers already hold them.

The model-call columns keep what the detectors need; a trace view needs the
span itself (name, parent, kind, status, events, links, every attribute) with
its resource and scope. Neither reader copies anything for it: the fast reader
keeps where each span sits in the request's bytes (one object per request, not
one per span: a flush keeps tens of thousands of them), the reference reader
the parsed messages, each with the resource and scope they arrived under. Only
the spans ``storage.traces`` writes (a sampled share and the aggregates'
exemplars, a few per thousand) are ever parsed back, by :meth:`record`, on the
flusher's thread.

The request's bytes themselves need not stay in memory: they are in the spool
until the flush ends, so once spooled a pending batch reads its few spans back
from there (:meth:`SerializedSpans.reading_from`). They were more than half of
what a waiting request held (0.82 of 1.45 MiB for a request of 1,000 spans with
20 features), and a collector under load holds tens of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from segwatch.collector.model_calls import SpanRecord

__all__ = ["ParsedSpans", "SerializedSpans", "SpanBytes"]

SpanBytes = Callable[[int, int], bytes]
"""Reads bytes ``start:stop`` of a request (offsets into its serialized bytes)."""


@dataclass(frozen=True)
class SerializedSpans:
    """A request's spans as serialized ``Span`` messages (the fast reader's), in place in
    the request's bytes ``data``: span ``i`` is ``data[span_start[i]:span_stop[i]]``.

    ``origins[origin_of_span[i]]`` holds span ``i``'s resource attributes (each
    a serialized ``KeyValue``) and its serialized ``InstrumentationScope``.
    With ``read``, ``data`` is not kept and the spans' bytes come from it.
    """

    data: bytes
    span_start: npt.NDArray[np.int64]
    span_stop: npt.NDArray[np.int64]
    origin_of_span: npt.NDArray[np.int64]
    origins: Sequence[tuple[Sequence[bytes], bytes]]
    read: SpanBytes | None = None
    # Each origin parsed once: the spans of a request share a few resources and scopes.
    _parsed: dict[int, tuple[list[Any], Any]] = field(default_factory=dict, compare=False)

    def record(self, span: int) -> SpanRecord:
        origin = int(self.origin_of_span[span])
        parsed = self._parsed.get(origin)
        if parsed is None:
            attributes, scope = self.origins[origin]
            parsed = self._parsed[origin] = (
                [KeyValue.FromString(kv) for kv in attributes],
                InstrumentationScope.FromString(scope),
            )
        start, stop = int(self.span_start[span]), int(self.span_stop[span])
        serialized = self.data[start:stop] if self.read is None else self.read(start, stop)
        return SpanRecord(Span.FromString(serialized), *parsed)

    def reading_from(self, read: SpanBytes) -> SerializedSpans:
        """The same spans, their bytes read through ``read`` when written, not kept."""
        return SerializedSpans(
            b"", self.span_start, self.span_stop, self.origin_of_span, self.origins, read
        )


@dataclass(frozen=True)
class ParsedSpans:
    """A request's spans as parsed messages (the reference reader's): ``spans[i]`` is a
    ``Span``, ``origins[i]`` its ``(Resource, InstrumentationScope)``."""

    spans: Sequence[Any]
    origins: Sequence[tuple[Any, Any]]

    # Each resource's attributes listed once (spans of a scope share them).
    _attributes: dict[int, list[Any]] = field(default_factory=dict, compare=False)

    def record(self, span: int) -> SpanRecord:
        resource, scope = self.origins[span]
        attributes = self._attributes.get(id(resource))
        if attributes is None:
            attributes = self._attributes[id(resource)] = list(resource.attributes)
        return SpanRecord(self.spans[span], attributes, scope)
