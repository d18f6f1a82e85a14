"""ClickHouse Native-format blocks, built column by column with numpy.

The collector inserts with ``INSERT ... FORMAT Native`` and builds the bytes
itself: numeric columns are the arrays' own little-endian memory, maps and
arrays are an offsets array plus their flattened keys and values, strings
that repeat (model names, quantities, map keys) are encoded once per distinct
value. That is what makes an insert cost a few bytes-joins instead of a
Python loop per row and per map entry (clickhouse-connect's generic
serializer spent more time than the engine on our rows).

Only what the collector's tables use is supported: fixed-width numbers,
``DateTime``/``DateTime64``, ``String``, ``LowCardinality(String)``,
``Map(K, V)``, ``Array(T)`` and ``SimpleAggregateFunction(f, T)`` (stored as
``T``). The layout is ClickHouse's Native format without compression (see
``docs/batch-columns.md`` for our own span format; this one is ClickHouse's):
per block, the column and row counts as varints, then per column its name,
its type and its data.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ArrayColumn", "Coded", "HexColumn", "MapColumn", "native_block", "native_chunks"]


@dataclass(frozen=True)
class Coded:
    """Strings as codes into a dictionary: row ``i`` is ``dictionary[codes[i]]``."""

    codes: npt.NDArray[np.integer[Any]]
    dictionary: Sequence[str]

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> str:
        return self.dictionary[int(self.codes[index])]


@dataclass(frozen=True)
class HexColumn:
    """Byte strings written as their lowercase hex text (a ``String`` column): row ``i`` is
    ``raw[i].hex()``, computed by the encoder for all rows at once (trace and span ids)."""

    raw: Sequence[bytes]

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int) -> str:
        return self.raw[index].hex()


@dataclass(frozen=True)
class MapColumn:
    """A ``Map(K, V)`` column: row ``i`` holds entries ``ends[i-1]:ends[i]`` of keys and values."""

    ends: npt.NDArray[np.uint64]
    keys: Any  # an array of numbers, a Coded or a list of strings
    values: Any

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index: int) -> dict[Any, Any]:
        start = int(self.ends[index - 1]) if index else 0
        stop = int(self.ends[index])
        keys = _items(self.keys, start, stop)
        return dict(zip(keys, _items(self.values, start, stop), strict=True))

    def tolist(self) -> list[dict[Any, Any]]:
        return [self[i] for i in range(len(self))]


@dataclass(frozen=True)
class ArrayColumn:
    """An ``Array(T)`` column: row ``i`` holds elements ``ends[i-1]:ends[i]`` of ``values``."""

    ends: npt.NDArray[np.uint64]
    values: Any

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index: int) -> list[Any]:
        start = int(self.ends[index - 1]) if index else 0
        return _items(self.values, start, int(self.ends[index]))


def _items(values: Any, start: int, stop: int) -> list[Any]:
    if isinstance(values, Coded):
        return [values.dictionary[c] for c in values.codes[start:stop].tolist()]
    if isinstance(values, np.ndarray):
        return list(values[start:stop].tolist())
    return list(values[start:stop])


def native_block(names: Sequence[str], types: Sequence[str], columns: Sequence[Any]) -> bytes:
    """One Native block of ``columns`` (all of the same length), typed as ``types``."""
    return b"".join(native_chunks(names, types, columns))


def native_chunks(
    names: Sequence[str], types: Sequence[str], columns: Sequence[Any]
) -> Iterator[bytes]:
    """The same block as :func:`native_block`, in pieces, encoded as they are asked for.

    An insert writes each piece and drops it before the next is encoded, so a
    large flush never holds its encoded copy whole (or twice, joined) beside
    its rows. Column lengths are checked at once, before the first piece.
    """
    rows = len(columns[0]) if columns else 0
    for name, values in zip(names, columns, strict=True):
        if len(values) != rows:
            raise ValueError(f"column {name} has {len(values)} rows, expected {rows}")
    return _chunks(names, types, columns, rows)


def _chunks(
    names: Sequence[str], types: Sequence[str], columns: Sequence[Any], rows: int
) -> Iterator[bytes]:
    yield _varint(len(columns)) + _varint(rows)
    for name, type_, values in zip(names, types, columns, strict=True):
        prefix, data = _encode(type_, values)
        yield _string(name) + _string(type_) + prefix
        yield from data


_FIXED = {
    "Float64": "<f8",
    "Float32": "<f4",
    "UInt64": "<u8",
    "Int64": "<i8",
    "UInt32": "<u4",
    "Int32": "<i4",
    "UInt16": "<u2",
    "Int16": "<i2",
    "UInt8": "<u1",
    "Int8": "<i1",
}
_WRAPPER = re.compile(r"^(\w+)\((.*)\)$")


def _encode(type_: str, values: Any) -> tuple[bytes, list[bytes]]:
    """(serialization-state prefix, data in pieces) of one column; LowCardinality has a prefix."""
    dtype = _FIXED.get(type_)
    if dtype is not None:
        return b"", [np.ascontiguousarray(values, dtype=dtype).tobytes()]
    if type_ == "String":
        return b"", [_strings(values)]
    match = _WRAPPER.match(type_)
    if match is None:
        raise ValueError(f"unsupported ClickHouse type {type_}")
    wrapper, inner = match.groups()
    if wrapper == "LowCardinality" and inner == "String":
        return _low_cardinality(values)
    if wrapper == "SimpleAggregateFunction":
        return _encode(_split_arguments(inner)[1], values)
    if wrapper == "DateTime":
        return b"", [_times(values, 0).astype("<u4").tobytes()]
    if wrapper == "DateTime64":
        scale = int(_split_arguments(inner)[0])
        return b"", [_times(values, scale).astype("<i8").tobytes()]
    if wrapper == "Map":
        key_type, value_type = _split_arguments(inner)
        entries = values if isinstance(values, MapColumn) else _map_column(values)
        key_prefix, keys = _encode(key_type, entries.keys)
        value_prefix, data = _encode(value_type, entries.values)
        ends = np.ascontiguousarray(entries.ends, dtype="<u8").tobytes()
        return key_prefix + value_prefix, [ends, *keys, *data]
    if wrapper == "Array":
        column = values if isinstance(values, ArrayColumn) else _array_column(values)
        prefix, data = _encode(inner, column.values)
        return prefix, [np.ascontiguousarray(column.ends, dtype="<u8").tobytes(), *data]
    raise ValueError(f"unsupported ClickHouse type {type_}")


def _split_arguments(inner: str) -> list[str]:
    """``"String, Map(Int16, Float64)"`` → ``["String", "Map(Int16, Float64)"]``."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(inner):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return parts


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SHORT = [bytes([n]) for n in range(0x80)]


def _string(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    return (_SHORT[n] if n < 0x80 else _varint(n)) + data


def _hex_strings(raw: Sequence[bytes]) -> bytes:
    """Each byte string as its hex text, each prefixed by its length: when all have one
    length under 64 bytes (ids), their hex is written at once and numpy puts the length
    bytes between; else a step per value."""
    if not any(raw):  # no ids at all (a backfill's calls): each an empty string
        return b"\x00" * len(raw)
    width = len(raw[0])
    if width >= 0x40 or set(map(len, raw)) != {width}:
        return b"".join([_string(r.hex()) for r in raw])
    digits = b"".join(raw).hex().encode("ascii")  # every id's hex, one after the other
    out = np.empty((len(raw), 1 + 2 * width), dtype=np.uint8)
    out[:, 0] = 2 * width
    out[:, 1:] = np.frombuffer(digits, dtype=np.uint8).reshape(len(raw), 2 * width)
    return out.tobytes()


def _strings(values: Any) -> bytes:
    if isinstance(values, HexColumn):
        return _hex_strings(values.raw)
    if isinstance(values, Coded):
        return _coded_strings(np.asarray(values.codes, dtype=np.intp), values.dictionary)
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if len(values) and _all_alike(values):  # one value in every row (e.g. no prediction ids)
        return _string(values[0]) * len(values)
    encoded = [v.encode() for v in values]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    if not len(encoded) or lengths.max() >= 0x80:
        return b"".join([_string(v) for v in values])
    # Every length fits one varint byte: interleave the length bytes with numpy.
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    out = np.empty(len(data) + len(encoded), dtype=np.uint8)
    at = np.cumsum(lengths + 1) - (lengths + 1)  # where each length byte goes
    out[at] = lengths
    text = np.ones(len(out), dtype=bool)
    text[at] = False
    out[text] = data
    return out.tobytes()


_GATHER_CODES = 1 << 16
"""Codes gathered per step by :func:`_coded_strings`: bounds its padded copy (a few MiB)."""
_WIDEST_GATHERED = 64
"""Past this many bytes a dictionary string is joined value by value: a table padded to it
would copy more than it saves."""


def _coded_strings(codes: npt.NDArray[np.intp], dictionary: Sequence[str]) -> bytes:
    """Each code's dictionary string, length-prefixed (code -1: nothing), without a step
    per value: the dictionary's encoded strings are the rows of a byte table padded to the
    longest, gathered by code, then the padding dropped (nothing to drop when all are as
    long: the usual labels of one length)."""
    pieces = [_string(s) for s in dictionary] + [b""]
    widths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    width = int(widths.max())
    if width > _WIDEST_GATHERED:
        return b"".join(np.array(pieces, dtype=object)[codes].tolist())
    table = np.zeros((len(pieces), width), dtype=np.uint8)
    for row, piece in enumerate(pieces):
        table[row, : len(piece)] = np.frombuffer(piece, dtype=np.uint8)
    if not len(codes) or (bool((widths[:-1] == width).all()) and int(codes.min()) >= 0):
        return table[codes].tobytes()
    columns = np.arange(width)
    parts = (codes[at : at + _GATHER_CODES] for at in range(0, len(codes), _GATHER_CODES))
    # each part's rows, less their padding (the mask is made per part: a dictionary of
    # many values would double the table)
    return np.concatenate(
        [table[part][columns < widths[part][:, None]] for part in parts]
    ).tobytes()


def _low_cardinality(values: Any) -> tuple[bytes, list[bytes]]:
    """``LowCardinality(String)``: dictionary format version 1, one granule of keys + indexes."""
    if isinstance(values, Coded):
        codes, dictionary = np.asarray(values.codes), list(values.dictionary)
    else:
        dictionary, codes = factorize(list(values))
    prefix = np.array([1], dtype="<u8").tobytes()
    if not len(codes):
        return prefix, []
    if len(dictionary) <= 1 << 8:
        index_type, index_dtype = 0, "<u1"
    elif len(dictionary) <= 1 << 16:
        index_type, index_dtype = 1, "<u2"
    else:
        index_type, index_dtype = 2, "<u4"
    # Flags: the index width, "has additional keys" (bit 9), "needs a dictionary update" (bit 10).
    flags = index_type | (1 << 9) | (1 << 10)
    header = np.array([flags, len(dictionary)], dtype="<u8").tobytes()
    keys = b"".join([_string(s) for s in dictionary])
    count = np.array([len(codes)], dtype="<u8").tobytes()
    return prefix, [header + keys + count, codes.astype(index_dtype).tobytes()]


def _times(values: Any, scale: int) -> npt.NDArray[np.int64]:
    """Integers are taken as already in the column's unit; datetimes are converted."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.astype(np.int64)
    if len(values) and isinstance(values[0], dt.datetime):
        return np.array([_to_epoch(v, scale) for v in values], dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


def _to_epoch(value: Any, scale: int) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return int(micros * 10**scale // 1_000_000)
    return int(value)


def _map_column(rows: Sequence[dict[Any, Any]]) -> MapColumn:
    keys: list[Any] = []
    values: list[Any] = []
    for row in rows:
        keys.extend(row.keys())
        values.extend(row.values())
    ends = np.cumsum([len(row) for row in rows], dtype=np.uint64)
    return MapColumn(ends, keys, values)


def _array_column(rows: Sequence[Sequence[Any]]) -> ArrayColumn:
    values: list[Any] = []
    for row in rows:
        values.extend(row)
    return ArrayColumn(np.cumsum([len(row) for row in rows], dtype=np.uint64), values)


def factorize(values: list[str]) -> tuple[list[str], npt.NDArray[np.int64]]:
    """Distinct values in first-seen order, and each value's index among them.

    A dict does this in one pass; ``np.unique`` on an object array sorts
    Python strings and is several times slower.
    """
    if len(values) and _all_alike(values):  # e.g. one operation, one service in a flush
        return [values[0]], np.zeros(len(values), dtype=np.int64)
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return list(index), np.asarray(codes, dtype=np.int64)


def _all_alike(values: list[str]) -> bool:
    """Whether every value equals the first: ``list.count`` compares in C (identity first:
    a decoded column's repeated values are usually one object)."""
    return values.count(values[0]) == len(values)
