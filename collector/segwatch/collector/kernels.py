"""The collector's inner loops: compiled C (``_kernels.c``) where it was built, else numpy.

Two families: the aggregator's (:func:`group_stats`, :func:`group_entries`)
and the span reader's (:func:`walk_fields`, :func:`read_key_values`,
:func:`factorize_slices`, :func:`read_fixed64`, used by
:mod:`.decode.span_table`, :mod:`.decode.key_values` and :mod:`.decode.wire`,
which keep their numpy formulation for a build without a compiler).

Aggregating one quantity over every segment dimension is, in numpy, a dozen
passes over a tiled ``dimensions × values`` array (one ``bincount`` per
statistic, ``ufunc.at`` for min and max, a compaction and a count for the
histogram). In C each is one loop over the values that updates every
statistic of the value's group in place: several times faster, no temporary
arrays, and ctypes releases the GIL during the call, so receiver threads
decode while the flusher aggregates.

The library is compiled when the package is installed (``hatch_build.py``);
without it (:mod:`.kernels_library` says when it is not used) the numpy
formulation below does the same work, slower (:data:`COMPILED` says which one
runs). Both give the same numbers bit for bit: each group adds the same terms
in the same order (its rows in order; a group belongs to one dimension), which
``tests/collector/test_kernels.py`` checks. The C loops take a row's groups in
every dimension at once (:attr:`GroupMatrix.by_row`): the updates of one row
then go to different groups and do not wait on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from segwatch.collector.kernels_library import ABI, LIBRARY, NUMPY_FORCED, load

__all__ = [
    "ABI",
    "COMPILED",
    "LIBRARY",
    "NUMPY_FORCED",
    "GroupMatrix",
    "factorize_slices",
    "group_entries",
    "group_stats",
    "read_fixed64",
    "read_key_values",
    "walk_fields",
]

DENSE_CELLS = 1 << 20
"""Up to this many (group, key) cells (8 MiB of counters, 4 MiB where every row weighs 1), or
four per entry, entries are counted densely; beyond, sorted (two counting sorts in C,
``np.unique`` in numpy)."""

MAX_KEY_RANGE = 1 << 24
"""Keys of one call to :func:`group_entries` span at most this many values (the C loop
keeps a counter per value in the range: histogram keys span 65,536, category codes fewer)."""

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
_I32 = npt.NDArray[np.int32]


_LIBRARY = load()
COMPILED = _LIBRARY is not None
"""Whether the compiled loops run (else the numpy formulation)."""


def _address(array: npt.NDArray[np.generic]) -> int:
    return int(array.ctypes.data)


@dataclass(frozen=True)
class GroupMatrix:
    """The group of every row in every segment dimension, checked once for the C loops.

    ``matrix[d, r]`` is the group of row ``r`` in dimension ``d``, below
    ``total``; the matrix is kept as a read-only copy, so what was checked
    stays true. The C loops read it row by row (:attr:`by_row`, ``rows ×
    dimensions``), one row's groups in every dimension at once, which adds
    each group's terms in the numpy formulation's order only when no group
    belongs to two dimensions: when the dimensions' group ranges overlap,
    :attr:`by_row` is None and the numpy formulation runs (the aggregator's
    dimensions each have a range of their own).
    """

    matrix: _I64
    total: int

    def __post_init__(self) -> None:
        matrix = np.array(self.matrix, dtype=np.int64, order="C")  # a copy: ours alone
        if matrix.ndim != 2:
            raise ValueError("a group matrix is dimensions × rows")
        if matrix.size and (int(matrix.min()) < 0 or int(matrix.max()) >= self.total):
            raise ValueError(f"group numbers must be in [0, {self.total})")
        matrix.flags.writeable = False
        object.__setattr__(self, "matrix", matrix)

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[1])

    @cached_property
    def by_row(self) -> _I32 | None:
        """``rows × dimensions`` in 32 bits (a read-only copy: what the C loops stream, once
        per quantity), or None when two dimensions share groups or there are 2^31 groups."""
        matrix = self.matrix
        if self.total > np.iinfo(np.int32).max:
            return None
        if matrix.size and matrix.shape[0] > 1:
            low, high = matrix.min(axis=1), matrix.max(axis=1)
            order = np.argsort(low, kind="stable")
            if bool(np.any(low[order][1:] <= high[order][:-1])):
                return None
        by_row = np.ascontiguousarray(matrix.T, dtype=np.int32)
        by_row.flags.writeable = False
        return by_row


def _check_arrays(**arrays: tuple[npt.NDArray[np.generic], type, int]) -> None:
    """Each array must be 1-D, contiguous, of its dtype and (unless -1) of its length."""
    for name, (array, dtype, length) in arrays.items():
        if array.dtype != dtype or array.ndim != 1 or not array.flags.c_contiguous:
            raise TypeError(f"{name} must be a contiguous 1-D {np.dtype(dtype).name} array")
        if length >= 0 and len(array) != length:
            raise ValueError(f"{name} has {len(array)} values, not {length}")


def group_stats(
    groups: GroupMatrix, present: _I64, number_pos: _I64, numbers: _F64, weights: _F64
) -> tuple[_F64, _F64, _F64, _F64, _F64, _F64]:
    """Per group: weighted rows present, numeric count, sum, sum of squares, min, max.

    ``present`` are the rows with any value, ``number_pos`` those with the
    finite ``numbers``; ``weights`` are per row.
    """
    n_rows, total = groups.rows, groups.total
    _check_arrays(
        present=(present, np.int64, -1), number_pos=(number_pos, np.int64, -1),
        numbers=(numbers, np.float64, len(number_pos)), weights=(weights, np.float64, n_rows),
    )  # fmt: skip
    by_row = None if _LIBRARY is None else groups.by_row
    if _LIBRARY is None or by_row is None:
        _check_rows(present, n_rows)
        _check_rows(number_pos, n_rows)
        return _numpy_group_stats(groups.matrix, present, number_pos, numbers, weights, total)
    out = tuple(np.empty(total) for _ in range(6))
    status = _LIBRARY.segwatch_group_stats(
        _address(by_row), groups.matrix.shape[0], n_rows,
        _address(present), len(present),
        _address(number_pos), _address(numbers), len(number_pos),
        _address(weights), total, *(_address(a) for a in out),
    )  # fmt: skip
    _raise_for(status, "row numbers must be in [0, {})", n_rows)
    return out  # type: ignore[return-value]


def group_entries(
    groups: GroupMatrix,
    rows: _I64,
    keys: _I64,
    weights: _F64,
    live: _I64,
    dense_cells: int | None = None,
) -> tuple[_I64, _I64, _F64]:
    """Per group of ``live``: its distinct keys (sorted) and their summed weights.

    Row ``rows[i]`` has key ``keys[i]`` and counts in its group of every
    dimension (``groups.matrix[d, rows[i]]``) with ``weights[rows[i]]``, which must
    be positive (a cell with weight is a cell with entries). ``live`` must be
    strictly increasing (``ValueError`` otherwise): a group given twice would
    have its entries twice, past the room the entries are given. Returns each
    live group's number of entries, then all entries' keys and weights, group
    after group. ``dense_cells`` overrides when to count densely (tests use it).
    """
    n_rows, total = groups.rows, groups.total
    _check_arrays(
        rows=(rows, np.int64, -1), keys=(keys, np.int64, len(rows)),
        weights=(weights, np.float64, n_rows), live=(live, np.int64, -1),
    )  # fmt: skip
    if len(live) > 1 and not bool(np.all(live[1:] > live[:-1])):
        raise ValueError(_LIVE_ORDER)
    capacity = groups.matrix.shape[0] * len(rows)  # every (dimension, row): one entry at most
    if dense_cells is None:
        dense_cells = max(DENSE_CELLS, 4 * capacity)  # then a count beats the alternative
    by_row = None if _LIBRARY is None else groups.by_row
    if _LIBRARY is None or by_row is None:
        _check_rows(rows, n_rows)
        _check_rows(live, total)
        if len(keys) and int(keys.max()) - int(keys.min()) >= MAX_KEY_RANGE:
            raise ValueError(_ENTRIES_RANGE)
        return _numpy_group_entries(groups.matrix, rows, keys, weights, live, total, dense_cells)
    lengths = np.empty(len(live), dtype=np.int64)
    out_keys = np.empty(capacity, dtype=np.int64)
    out_weights = np.empty(capacity, dtype=np.float64)
    entries = _LIBRARY.segwatch_group_entries(
        _address(groups.matrix), _address(by_row), groups.matrix.shape[0], n_rows,
        _address(rows), _address(keys), len(rows), _address(weights),
        _address(live), len(live), total, dense_cells, MAX_KEY_RANGE, capacity,
        _address(lengths), _address(out_keys), _address(out_weights),
    )  # fmt: skip
    _raise_for(entries, _ENTRIES_RANGE)
    # Copies: a view would keep the capacity-sized buffers alive until the rows are built
    # (a backfill's peak memory grew with them), for a copy of a few entries. (Shrinking
    # them in place instead, with realloc, left the kept entries where the next call's
    # buffers would have gone: each call then faulted fresh pages in, more system time
    # than the copy's.)
    return lengths, out_keys[:entries].copy(), out_weights[:entries].copy()


def walk_fields(
    buf: npt.NDArray[np.uint8], span_start: _I64, span_end: _I64
) -> tuple[_I64, _I64, _I64, _I64, _I64] | None:
    """Every protobuf field of every span ``buf[span_start[s]:span_end[s]]``, in span order.

    Returns (span, field number, wire type, payload start, payload stop) per
    field, or None when a span is irregular: field number 0, a wire type
    protobuf 3 does not use (groups), a field running past its span. Only
    with :data:`COMPILED`.
    """
    assert _LIBRARY is not None
    _check_buffer(buf)
    _check_arrays(span_start=(span_start, np.int64, -1),
                  span_end=(span_end, np.int64, len(span_start)))  # fmt: skip
    args = (_address(buf), len(buf), _address(span_start), _address(span_end), len(span_start))
    count = _LIBRARY.segwatch_walk_fields(*args, 0, *[None] * 5)
    if count == _IRREGULAR:
        return None
    _raise_for(count, _MESSAGES_RANGE)
    out = tuple(np.empty(count, dtype=np.int64) for _ in range(5))
    if _LIBRARY.segwatch_walk_fields(*args, count, *(_address(a) for a in out)) != count:
        raise RuntimeError("the span walk changed between its two passes")
    return out  # type: ignore[return-value]


def factorize_slices(buf: npt.NDArray[np.uint8], start: _I64, length: _I64) -> tuple[_I64, _I64]:
    """Codes of the byte strings ``buf[start[i]:start[i] + length[i]]``, first seen first.

    Returns the codes and, per code, the first slice that has it. Only with
    :data:`COMPILED`.
    """
    assert _LIBRARY is not None
    _check_buffer(buf)
    _check_arrays(start=(start, np.int64, -1), length=(length, np.int64, len(start)))
    codes = np.empty(len(start), dtype=np.int64)
    firsts = np.empty(len(start), dtype=np.int64)
    distinct = _LIBRARY.segwatch_factorize_slices(
        _address(buf), len(buf), _address(start), _address(length), len(start),
        _address(codes), _address(firsts),
    )  # fmt: skip
    _raise_for(distinct, "slices must lie within the buffer")
    return codes, firsts[:distinct].copy()


def read_key_values(
    buf: npt.NDArray[np.uint8], start: _I64, end: _I64, max_key: int
) -> tuple[_I64, _I64, npt.NDArray[np.uint8], _I64, _I64] | None:
    """Key start and length, value kind, payload and size of each KeyValue ``buf[start:end]``.

    The kind is the AnyValue's tag byte (0x0A string, 0x10 bool, 0x18 int,
    0x21 double) or 0 (no value); the payload is where the string's bytes or
    the number start, the size the string's length. None when an attribute is
    not that simple (arrays, maps, bytes, a key longer than ``max_key``, the key
    not first, anything after the value). Only with :data:`COMPILED`.
    """
    assert _LIBRARY is not None
    _check_buffer(buf)
    _check_arrays(start=(start, np.int64, -1), end=(end, np.int64, len(start)))
    n = len(start)
    key_start, key_length, payload, size = (np.empty(n, dtype=np.int64) for _ in range(4))
    kind = np.empty(n, dtype=np.uint8)
    status = _LIBRARY.segwatch_read_key_values(
        _address(buf), len(buf), _address(start), _address(end), n, max_key,
        _address(key_start), _address(key_length), _address(kind), _address(payload),
        _address(size),
    )  # fmt: skip
    if status == _IRREGULAR:
        return None
    _raise_for(status, _MESSAGES_RANGE)
    return key_start, key_length, kind, payload, size


def read_fixed64(buf: npt.NDArray[np.uint8], at: _I64, dtype: type) -> npt.NDArray[Any]:
    """The 8-byte little-endian values at ``buf[at[i]]``, as ``dtype`` (``<f8`` or ``<u8``)."""
    _check_buffer(buf)
    _check_arrays(at=(at, np.int64, -1))
    out = np.empty(len(at), dtype=np.dtype(dtype).newbyteorder("<"))
    if _LIBRARY is None:
        if len(at) and (int(at.min()) < 0 or int(at.max()) > len(buf) - 8):
            raise ValueError(_FIXED64_RANGE)
        out[:] = buf[at[:, None] + np.arange(8)].copy().view(out.dtype).ravel()
        return out
    status = _LIBRARY.segwatch_read_fixed64(
        _address(buf), len(buf), _address(at), len(at), _address(out)
    )
    _raise_for(status, _FIXED64_RANGE)
    return out


# What the C loops return: -1 is "irregular" from the span reader's loops, "no memory"
# from the others; -2 is "no room" (an output would pass the capacity it was given);
# -3 is out of range.
_IRREGULAR, _NO_ROOM, _OUT_OF_RANGE = -1, -2, -3
_ENTRIES_RANGE = f"row numbers must be in range and keys span fewer than {MAX_KEY_RANGE} values"
_LIVE_ORDER = "live groups must be strictly increasing (sorted, none repeated)"
_MESSAGES_RANGE = "messages must lie within the buffer"
_FIXED64_RANGE = "fixed64 values must lie within the buffer"


def _raise_for(status: int, message: str, *args: object) -> None:
    """Turn a C loop's error status into the exception it means."""
    if status == _OUT_OF_RANGE:
        raise ValueError(message.format(*args))
    if status == _NO_ROOM:
        raise ValueError("the output would pass the room it was given (a repeated index?)")
    if status < 0:
        raise MemoryError("the compiled loops ran out of memory")


def _check_buffer(buf: npt.NDArray[np.uint8]) -> None:
    if buf.dtype != np.uint8 or buf.ndim != 1 or not buf.flags.c_contiguous:
        raise TypeError("the buffer must be a contiguous 1-D uint8 array")


def _check_rows(rows: _I64, limit: int) -> None:
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= limit):
        raise ValueError(f"row numbers must be in [0, {limit})")


# -- the numpy formulation (no compiler; and what the C loops are tested against) ---------


def _numpy_group_stats(
    groups: _I64, present: _I64, number_pos: _I64, numbers: _F64, weights: _F64, total: int
) -> tuple[_F64, _F64, _F64, _F64, _F64, _F64]:
    dims = len(groups)
    flat = groups[:, number_pos].ravel()
    values = np.tile(numbers, dims)
    w = np.tile(weights[number_pos], dims)
    minima, maxima = np.full(total, np.inf), np.full(total, -np.inf)
    np.minimum.at(minima, flat, values)
    np.maximum.at(maxima, flat, values)
    weighted_present = np.bincount(
        groups[:, present].ravel(), weights=np.tile(weights[present], dims), minlength=total
    )
    with np.errstate(over="ignore"):  # past float64's range a sum is inf, as in the C loops
        weighted, squares = values * w, values * values * w
    return (
        weighted_present.astype(np.float64),
        np.bincount(flat, weights=w, minlength=total).astype(np.float64),
        np.bincount(flat, weights=weighted, minlength=total).astype(np.float64),
        np.bincount(flat, weights=squares, minlength=total).astype(np.float64),
        minima,
        maxima,
    )


def _numpy_group_entries(
    groups: _I64,
    rows: _I64,
    keys: _I64,
    weights: _F64,
    live: _I64,
    total: int,
    dense_cells: int,
) -> tuple[_I64, _I64, _F64]:
    if not len(rows):
        return np.zeros(len(live), dtype=np.int64), keys[:0], weights[:0]
    dims = len(groups)
    group = groups[:, rows].ravel()
    distinct, key = np.unique(np.tile(keys, dims), return_inverse=True)
    span = len(distinct)
    cell_weights = np.tile(weights[rows], dims)
    if total * span <= dense_cells:
        dense = np.bincount(group * span + key, weights=cell_weights, minlength=total * span)
        cells = np.flatnonzero(dense)
        sums = dense[cells]
    else:  # bincount adds each cell's terms in input order, as the dense count does
        cells, inverse = np.unique(group * span + key, return_inverse=True)
        sums = np.bincount(inverse, weights=cell_weights, minlength=len(cells))
    owners = cells // span
    wanted = np.zeros(total, dtype=bool)
    wanted[live] = True
    take = wanted[owners]
    lengths = np.searchsorted(owners, live, side="right") - np.searchsorted(owners, live)
    return (
        lengths.astype(np.int64),
        distinct[(cells % span)[take]].astype(np.int64),
        sums[take].astype(np.float64),
    )
