"""The spans of a request, read field by field for all spans at once.

:mod:`.request_layout` finds where each span sits in the request's bytes;
:meth:`SpanTable.read` walks their fields in place, in one compiled pass
(:func:`~segwatch.collector.kernels.walk_fields`), or, without the compiled loops, in numpy
lock-step: step ``k`` reads the ``k``-th field of every span that has one, so
a request of a thousand spans with thirty fields each takes thirty numpy
steps, not thirty thousand Python ones. Either way no Python object is made
per attribute. What comes out: each span's trace and span id, name, start and
end, and where each of its attributes (``KeyValue`` messages) sits in the
request's buffer, in span order.

Anything irregular raises :class:`.wire.NotSimple` and the request goes to the
reference reader: a field we read repeated or with the wrong wire type, a
wire type that protobuf 3 does not use (groups), a field that overruns its
span, a name that is not UTF-8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from segwatch.collector import kernels

from .wire import KEY_WIDTH, NotSimple, varints

__all__ = [
    "PADDING",
    "SpanFields",
    "SpanTable",
    "SpanView",
    "checked_fields",
    "numpy_walk_fields",
    "walk_messages",
]

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_TRACE_ID, _SPAN_ID, _NAME, _START, _END, _ATTRIBUTE = 1, 2, 5, 7, 8, 9
_SINGULAR = {_TRACE_ID: _LEN, _SPAN_ID: _LEN, _NAME: _LEN, _START: _FIXED64, _END: _FIXED64}
PADDING = KEY_WIDTH + 16
"""Zero bytes after the joined spans, so fixed-width reads near the end stay inside."""


@dataclass(frozen=True)
class SpanView:
    """What a rejection message needs of a span."""

    name: str
    start_time_unix_nano: int
    end_time_unix_nano: int


@dataclass
class SpanTable:
    """The fields we read of every span; attributes as positions in ``buf``."""

    data: bytes  # the request the spans are in (plus PADDING)
    buf: npt.NDArray[np.uint8]  # the same bytes, for numpy
    span_start: npt.NDArray[np.int64]  # where each span starts in ``data``
    span_stop: npt.NDArray[np.int64]  # ... and ends
    start_ns: npt.NDArray[np.uint64]
    end_ns: npt.NDArray[np.uint64]
    ids: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]  # field → (start, stop)
    kv_span: npt.NDArray[np.int64]  # per attribute, in span order: its span
    kv_start: npt.NDArray[np.int64]  # where its KeyValue message starts
    kv_stop: npt.NDArray[np.int64]  # ... and ends

    def __len__(self) -> int:
        return len(self.start_ns)

    @classmethod
    def read(
        cls,
        data: bytes,
        buf: npt.NDArray[np.uint8],
        span_start: npt.NDArray[np.int64],
        span_stop: npt.NDArray[np.int64],
    ) -> SpanTable:
        """The spans ``data[span_start[i]:span_stop[i]]``; ``buf`` is ``data`` for numpy,
        which ends with at least :data:`PADDING` bytes past the last span."""
        n = len(span_start)
        fields = _walk(buf, span_start, span_stop)
        return cls(
            data=data,
            buf=buf,
            span_start=span_start,
            span_stop=span_stop,
            start_ns=_fixed64(buf, fields, _START, n),
            end_ns=_fixed64(buf, fields, _END, n),
            ids={f: _slices(fields, f, n) for f in (_TRACE_ID, _SPAN_ID, _NAME)},
            kv_span=fields.span[fields.attributes],
            kv_start=fields.start[fields.attributes],
            kv_stop=fields.stop[fields.attributes],
        )

    def bytes_of(self, field: int, spans: npt.NDArray[np.int64]) -> list[bytes]:
        start, stop = self.ids[field]
        data = self.data
        return [data[a:b] for a, b in zip(start[spans].tolist(), stop[spans].tolist(), strict=True)]

    def trace_ids(self, spans: npt.NDArray[np.int64]) -> list[bytes]:
        return self.bytes_of(_TRACE_ID, spans)

    def span_ids(self, spans: npt.NDArray[np.int64]) -> list[bytes]:
        return self.bytes_of(_SPAN_ID, spans)

    def view(self, span: int) -> SpanView:
        (name,) = self.bytes_of(_NAME, np.array([span], dtype=np.int64))
        return SpanView(name.decode("utf-8"), int(self.start_ns[span]), int(self.end_ns[span]))

    def check_names(self) -> None:
        """Span names must be UTF-8 (the reference reader refuses the request otherwise)."""
        start, stop = self.ids[_NAME]
        lengths = stop - start
        owner = np.repeat(np.arange(len(start)), lengths)  # the names' bytes only, not the buffer
        within = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        odd = np.unique(owner[self.buf[start[owner] + within] >= 0x80])
        for name in self.bytes_of(_NAME, odd):  # only names beyond ASCII
            try:
                name.decode("utf-8")
            except UnicodeDecodeError:
                raise NotSimple from None


@dataclass
class SpanFields:
    """Every field of every span, in span order: span, number, wire type, payload bounds."""

    span: npt.NDArray[np.int64]
    number: npt.NDArray[np.int64]
    wire_type: npt.NDArray[np.int64]
    start: npt.NDArray[np.int64]
    stop: npt.NDArray[np.int64]
    attributes: npt.NDArray[np.bool_]


def _walk(
    buf: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
) -> SpanFields:
    """Every field of every span, checked: compiled (one pass), else :func:`numpy_walk_fields`."""
    return checked_fields(*walk_messages(buf, pos, end))


def walk_messages(
    buf: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], ...]:
    """Every field of the messages ``buf[pos[m]:end[m]]``, in message order: (message,
    number, wire type, payload start, payload stop), compiled or in numpy lock-step.

    Raises :class:`.wire.NotSimple` when a message is irregular: groups, a field past
    its message, or field number 0. Nothing about a schema is checked.
    """
    if not kernels.COMPILED:
        return _numpy_walk(buf, pos, end)
    walked = kernels.walk_fields(buf, pos, end)
    if walked is None:
        raise NotSimple  # groups, a field past its span, or field number 0
    return walked


def numpy_walk_fields(
    buf: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
) -> SpanFields:
    """``kernels.walk_fields`` in numpy, in lock-step over the spans, then checked."""
    return checked_fields(*_numpy_walk(buf, pos, end))


def _numpy_walk(
    buf: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], ...]:
    pos = pos.copy()
    active = np.flatnonzero(pos < end)
    steps: list[tuple[npt.NDArray[np.int64], ...]] = []
    while len(active):  # one step per field index; checks are made once, after the walk
        at = pos[active]
        tag = buf[at].astype(np.int64)
        body = at + 1
        if (tag >= 0x80).any():  # field numbers past 15
            raw_tag, tag_size = varints(buf, at)
            tag, body = raw_tag.astype(np.int64), at + tag_size
        wire_type = tag & 7
        start = body.copy()
        stop = body + _FIXED_SIZE[wire_type]
        prefixed = np.flatnonzero(_HAS_VARINT[wire_type])
        if len(prefixed):
            value, size = varints(buf, body[prefixed])
            is_len = wire_type[prefixed] == _LEN
            start[prefixed] += np.where(is_len, size, 0)
            stop[prefixed] += size + np.where(is_len, value.astype(np.int64), 0)
        unknown = ~_KNOWN[wire_type]
        stop[unknown] = end[active[unknown]]  # groups end the walk; refused below
        steps.append((active, tag, start, stop))
        pos[active] = stop
        active = active[(stop < end[active]) & (stop >= start)]
    if not steps:  # no span has a field (every one empty): nothing to read
        nothing = np.zeros(0, dtype=np.int64)
        return nothing, nothing, nothing, nothing, nothing
    span, tag, start, stop = (np.concatenate(parts) for parts in zip(*steps, strict=True))
    # The tag is an unsigned varint: shifted as such (a 10-byte tag has bit 63 set, which
    # int64 would shift in as a sign), as the compiled walk shifts it.
    number = (tag.astype(np.uint64) >> np.uint64(3)).astype(np.int64)
    wire_type = tag & 7
    if (
        not _KNOWN[wire_type].all()
        or (stop > end[span]).any()
        or (stop < start).any()
        or (number == 0).any()
    ):
        raise NotSimple  # groups, a field past its span, or field number 0
    # Steps list the first field of every span, then the second...: put them in span order.
    counts = np.bincount(span, minlength=len(end))
    first = np.cumsum(counts) - counts
    step = np.repeat(np.arange(len(steps)), [len(s[0]) for s in steps])
    order = np.empty(len(span), dtype=np.int64)
    order[first[span] + step] = np.arange(len(span))
    return tuple(a[order] for a in (span, number, wire_type, start, stop))


def checked_fields(
    span: npt.NDArray[np.int64],
    number: npt.NDArray[np.int64],
    wire_type: npt.NDArray[np.int64],
    start: npt.NDArray[np.int64],
    stop: npt.NDArray[np.int64],
) -> SpanFields:
    """The fields (in span order) if the ones we read are as the schema says.

    Raises :class:`.wire.NotSimple` otherwise (the reference reader's business).
    """
    # One pass for all the fields we read (numbers past the table are not ours).
    expected = _EXPECTED_WIRE_TYPE[np.minimum(number, len(_EXPECTED_WIRE_TYPE) - 1)]
    ours = expected >= 0
    if (ours & (wire_type != expected)).any():
        raise NotSimple
    attributes = number == _ATTRIBUTE
    singular = ours & ~attributes
    if singular.any():
        pair = span[singular] * len(_EXPECTED_WIRE_TYPE) + number[singular]
        if np.bincount(pair).max() > 1:
            raise NotSimple  # what "last one wins" means here is the reference's business
    return SpanFields(span, number, wire_type, start, stop, attributes)


_EXPECTED_WIRE_TYPE = np.full(16, -1, dtype=np.int64)  # per field number we read: its wire type
for _field, _wire_type in {**_SINGULAR, _ATTRIBUTE: _LEN}.items():
    _EXPECTED_WIRE_TYPE[_field] = _wire_type
_KNOWN = np.zeros(8, dtype=bool)  # wire types protobuf 3 uses
_KNOWN[[_VARINT, _FIXED64, _LEN, _FIXED32]] = True
_HAS_VARINT = np.zeros(8, dtype=bool)  # a varint value, or a varint length
_HAS_VARINT[[_VARINT, _LEN]] = True
_FIXED_SIZE = np.zeros(8, dtype=np.int64)
_FIXED_SIZE[_FIXED64], _FIXED_SIZE[_FIXED32] = 8, 4


def _fixed64(
    buf: npt.NDArray[np.uint8], fields: SpanFields, field: int, n: int
) -> npt.NDArray[np.uint64]:
    out = np.zeros(n, dtype=np.uint64)  # proto3 default: 0
    mine = fields.number == field
    at = fields.start[mine]
    if len(at):
        out[fields.span[mine]] = kernels.read_fixed64(buf, at, np.uint64)
    return out


def _slices(
    fields: SpanFields, field: int, n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    start = np.zeros(n, dtype=np.int64)  # an absent field: the empty slice 0:0
    stop = np.zeros(n, dtype=np.int64)
    mine = fields.number == field
    start[fields.span[mine]] = fields.start[mine]
    stop[fields.span[mine]] = fields.stop[mine]
    return start, stop
