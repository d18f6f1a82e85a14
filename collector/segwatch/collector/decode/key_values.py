"""The attributes of every span at once: where each key and value sits, and what it holds.

:class:`.span_table.SpanTable` finds each attribute (a ``KeyValue`` message)
in the buffer of joined spans; :meth:`KeyValues.read` reads them all in one
compiled pass (:func:`~segwatch.collector.kernels.read_key_values`), or with numpy
(:func:`numpy_key_values`) without the compiled loops: each key's bytes,
factorized into codes, and each value's kind and position. Numbers are then
read where they sit (:meth:`KeyValues.numbers`) and strings factorized once
per request (:class:`StringValues`); no Python object is made per attribute.

Anything but a key followed by one scalar value (an array: a batch span; a
map, bytes, a key longer than :data:`.wire.KEY_WIDTH`, text that is not
UTF-8) raises :class:`.wire.NotSimple`: the reference reader reads the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from segwatch.collector import kernels
from segwatch.collector.model_calls import object_array

from .wire import KEY_WIDTH, NotSimple, factorize_slices, varints

__all__ = [
    "BOOL_VALUE",
    "DOUBLE_VALUE",
    "INT_VALUE",
    "NO_VALUE",
    "STRING_VALUE",
    "KeyValues",
    "StringValues",
    "numpy_key_values",
]

# The kind of an attribute's value: the first byte of its AnyValue (field number << 3 | wire type).
NO_VALUE: Final = 0
"""An empty AnyValue, or none at all."""
STRING_VALUE: Final = 0x0A
BOOL_VALUE: Final = 0x10
INT_VALUE: Final = 0x18
DOUBLE_VALUE: Final = 0x21


@dataclass
class KeyValues:
    """Where the key and the value of every attribute sit in one buffer, and what they are."""

    buf: npt.NDArray[np.uint8]
    span: npt.NDArray[np.int64]  # the span of each attribute
    key_codes: npt.NDArray[np.int64]  # into key_names
    key_names: list[str]  # in the order the keys first appear
    kind: npt.NDArray[np.uint8]  # NO_VALUE, STRING_VALUE, BOOL_VALUE, INT_VALUE or DOUBLE_VALUE
    payload: npt.NDArray[np.int64]  # where the string's bytes or the number starts
    size: npt.NDArray[np.int64]  # the string's length (strings only)

    @classmethod
    def read(
        cls,
        buf: npt.NDArray[np.uint8],
        span: npt.NDArray[np.int64],
        start: npt.NDArray[np.int64],
        end: npt.NDArray[np.int64],
    ) -> KeyValues:
        """The KeyValue messages ``buf[start:end]`` (``buf`` padded past its end)."""
        if kernels.COMPILED:
            located = kernels.read_key_values(buf, start, end, KEY_WIDTH)
            if located is None:
                raise NotSimple  # arrays (batch spans), maps, bytes, a long key, ...
            key_start, key_len, kind, payload, size = located
        else:
            key_start, key_len, kind, payload, size = numpy_key_values(buf, start, end)
        key_codes, key_names = factorize_slices(buf, key_start, key_len)
        return cls(
            buf=buf,
            span=span,
            key_codes=key_codes,
            key_names=[_text(k) for k in key_names],
            kind=kind,
            payload=payload,
            size=size,
        )

    def numbers(self, at: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Doubles, ints (as floats) and bools (as 0/1) of the attributes ``at``."""
        out = np.zeros(len(at), dtype=np.float64)
        kind = self.kind[at]
        doubles = kind == DOUBLE_VALUE
        if doubles.any():
            where = self.payload[at[doubles]]
            out[doubles] = kernels.read_fixed64(self.buf, where, np.float64)
        ints = (kind == INT_VALUE) | (kind == BOOL_VALUE)
        if ints.any():
            out[ints] = varints(self.buf, self.payload[at[ints]])[0].view(np.int64)
        return out


def numpy_key_values(
    buf: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.uint8],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
]:
    """``kernels.read_key_values`` in numpy: key start and length, kind, payload, size."""
    n = len(start)
    if (end == start).any() or (buf[start] != 0x0A).any():
        raise NotSimple  # an empty KeyValue, or not the key first
    raw_key_len, key_len_size = varints(buf, start + 1)
    key_len = raw_key_len.astype(np.int64)
    key_start = start + 1 + key_len_size
    key_end = key_start + key_len
    if (key_end > end).any() or (key_len > KEY_WIDTH).any():
        raise NotSimple
    kind = np.zeros(n, dtype=np.uint8)
    payload = np.zeros(n, dtype=np.int64)
    size = np.zeros(n, dtype=np.int64)
    valued = np.flatnonzero(key_end < end)
    if len(valued):
        tag_at = key_end[valued]
        if (buf[tag_at] != 0x12).any():
            raise NotSimple  # something after the key that is not its value
        raw_value_len, value_len_size = varints(buf, tag_at + 1)
        value_len = raw_value_len.astype(np.int64)
        value_start = tag_at + 1 + value_len_size
        if (value_start + value_len != end[valued]).any():
            raise NotSimple
        nonempty = value_len > 0
        valued, value_start = valued[nonempty], value_start[nonempty]
        kind[valued] = buf[value_start]
        payload[valued] = value_start + 1
        # Each value must be one field of a kind we read, ending where the KeyValue
        # ends; anything else (arrays: batch spans) goes to the reference reader.
        value_kind = kind[valued]
        is_double = value_kind == DOUBLE_VALUE
        if (end[valued[is_double]] != value_start[is_double] + 9).any():
            raise NotSimple
        varint = np.isin(value_kind, (STRING_VALUE, BOOL_VALUE, INT_VALUE))
        if not (is_double | varint).all():
            raise NotSimple
        at = valued[varint]
        raw_inner, inner_size = varints(buf, payload[at])
        inner = raw_inner.astype(np.int64)  # a string's length (ints may wrap: unused)
        is_string = kind[at] == STRING_VALUE
        stop = payload[at] + inner_size + np.where(is_string, inner, 0).astype(np.int64)
        if (stop != end[at]).any():
            raise NotSimple
        payload[at[is_string]] += inner_size[is_string]
        size[at[is_string]] = inner[is_string]
    return key_start, key_len, kind, payload, size


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotSimple from None  # the reference reader refuses the request


class StringValues:
    """The string values worth reading (of keys we use), factorized: ``values[code[i]]``."""

    def __init__(self, code: npt.NDArray[np.int64], values: npt.NDArray[np.object_]) -> None:
        self.code = code
        self.values = values

    @classmethod
    def read(cls, kvs: KeyValues, relevant: npt.NDArray[np.bool_]) -> StringValues:
        at = np.flatnonzero(relevant & (kvs.kind == STRING_VALUE))
        code = np.full(len(kvs.kind), -1, dtype=np.int64)
        codes, distinct = factorize_slices(kvs.buf, kvs.payload[at], kvs.size[at])
        code[at] = codes
        return cls(code, object_array([_text(d) for d in distinct]))
