"""Where a serialized trace request's spans sit, found without copying them out.

The fast reader reads the spans in place, in the request's own bytes: this
module walks the three levels above them (the request, each
``ResourceSpans``, each ``ScopeSpans``) with the span walk
(:func:`.span_table.walk_messages`, a few messages per level), and gives each
span's bounds in the request, and each scope's resource attributes (each a
serialized ``KeyValue``), its serialized ``InstrumentationScope`` and its
``service.name``. No Python object is made per span, and the request is
copied once (to put :data:`.span_table.PADDING` zero bytes after it).

Anything irregular at these levels raises :class:`.wire.NotSimple` (the
reference reader's business; protobuf's parse refuses what is malformed): a
field this module reads (``resource_spans``, ``resource``, its
``attributes``, ``scope_spans``, ``scope``, ``spans``) that is not
length-delimited, a ``resource`` or a ``scope`` given twice, a field number
protobuf refuses (0, or past 2^29 - 1), a group, a field running past its
message. Other fields (``schema_url``, ``dropped_attributes_count``) are
skipped, as the upb parse of a message class that does not declare them would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from .span_table import PADDING, walk_messages
from .wire import NotSimple

__all__ = ["RequestLayout", "read_layout"]

_I64 = npt.NDArray[np.int64]
_LEN = 2
_MAX_FIELD_NUMBER = (1 << 29) - 1


@dataclass(frozen=True)
class RequestLayout:
    """A request's spans, in request order, and the (resource, scope) each came under."""

    data: bytes  # the request, then PADDING zero bytes
    buf: npt.NDArray[np.uint8]  # the same bytes, for numpy
    span_start: _I64  # where span i's bytes start in ``data``
    span_stop: _I64  # ... and end
    origin_of_span: _I64  # span i's index into ``origins`` (one origin per ScopeSpans)
    origins: list[tuple[list[bytes], bytes]]  # (resource attributes, scope), serialized
    services: list[str]  # per origin: its resource's ``service.name``, "" without one

    def __len__(self) -> int:
        return len(self.span_start)


class _Level:
    """The fields of some messages of one level, walked at once."""

    def __init__(self, buf: npt.NDArray[np.uint8], start: _I64, stop: _I64) -> None:
        self.owner, self.number, wire_type, self.start, self.stop = walk_messages(buf, start, stop)
        self.n_messages = len(start)
        if len(self.number) and int(self.number.max()) > _MAX_FIELD_NUMBER:
            raise NotSimple  # protobuf's parse refuses it
        self._wire_type = wire_type

    def field(self, number: int, singular: bool = False) -> tuple[_I64, _I64, _I64]:
        """(owner message, payload start, payload stop) of each field ``number``, in order."""
        mine = self.number == number
        if (self._wire_type[mine] != _LEN).any():
            raise NotSimple
        owner = self.owner[mine]
        if singular and len(owner) and np.bincount(owner).max() > 1:
            raise NotSimple  # what a repeated message merges into is the reference's business
        return owner, self.start[mine], self.stop[mine]


def read_layout(payload: bytes) -> RequestLayout:
    """Where the spans of the serialized ``ExportTraceServiceRequest`` ``payload`` are.

    Raises :class:`.wire.NotSimple` for anything irregular above the spans (the
    module's docstring lists it); the spans themselves are not looked into.
    """
    data = payload + bytes(PADDING)
    buf = np.frombuffer(data, dtype=np.uint8)
    whole = np.array([0], dtype=np.int64)
    request = _Level(buf, whole, np.array([len(payload)], dtype=np.int64))
    _, rs_start, rs_stop = request.field(1)
    resource_spans = _Level(buf, rs_start, rs_stop)
    resource_owner, resource_start, resource_stop = resource_spans.field(1, singular=True)
    ss_owner, ss_start, ss_stop = resource_spans.field(2)
    resources = _Level(buf, resource_start, resource_stop)
    attribute_owner, attribute_start, attribute_stop = resources.field(1)
    scope_spans = _Level(buf, ss_start, ss_stop)
    scope_owner, scope_start, scope_stop = scope_spans.field(1, singular=True)
    span_owner, span_start, span_stop = scope_spans.field(2)

    # Each ResourceSpans' attributes, as bytes (a few per request).
    attributes: list[list[bytes]] = [[] for _ in range(resource_spans.n_messages)]
    resource_of = resource_owner[attribute_owner].tolist()
    for owner, a, b in zip(resource_of, attribute_start.tolist(), attribute_stop.tolist(),
                           strict=True):  # fmt: skip
        attributes[owner].append(data[a:b])
    services = [_service_name(chunks) for chunks in attributes]
    scopes = [b""] * scope_spans.n_messages
    for owner, a, b in zip(scope_owner.tolist(), scope_start.tolist(), scope_stop.tolist(),
                           strict=True):  # fmt: skip
        scopes[owner] = data[a:b]
    parents = ss_owner.tolist()
    return RequestLayout(
        data=data,
        buf=buf,
        span_start=span_start,
        span_stop=span_stop,
        origin_of_span=span_owner,
        origins=[(attributes[p], scopes[i]) for i, p in enumerate(parents)],
        services=[services[p] for p in parents],
    )


def _service_name(chunks: list[bytes]) -> str:
    """The resource's ``service.name`` (the first one, as the reference reader reads it)."""
    for chunk in chunks:
        kv = KeyValue.FromString(chunk)
        if kv.key == "service.name":
            return str(kv.value.string_value)
    return ""
