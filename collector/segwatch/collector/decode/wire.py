"""Protobuf wire format, read with numpy: varints at many positions at once."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from segwatch.collector import kernels

__all__ = ["KEY_WIDTH", "NotSimple", "factorize_slices", "numpy_factorize_slices", "varints"]

KEY_WIDTH = 64
"""Slices up to this long are factorized by hashing padded rows; longer ones one by one."""


class NotSimple(Exception):
    """The request has something only the reference reader handles."""


def varints(
    buf: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """The varints starting at ``at``: values and byte sizes (reads past the end see zeros)."""
    byte = buf[np.minimum(at, len(buf) - 1)]
    value = (byte & 0x7F).astype(np.uint64)
    size = np.ones(len(at), dtype=np.int64)
    more = np.flatnonzero(byte & 0x80)
    shift = 7
    while len(more):
        if shift > 63:
            raise NotSimple  # longer than ten bytes: not a varint
        byte = buf[np.minimum(at[more] + size[more], len(buf) - 1)]
        value[more] |= (byte & 0x7F).astype(np.uint64) << np.uint64(shift)
        size[more] += 1
        more = more[(byte & 0x80) != 0]
        shift += 7
    return value, size


def factorize_slices(
    buf: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], list[bytes]]:
    """Codes and distinct byte strings of the slices ``buf[start:start+length]``.

    Equal strings get equal codes. Compiled, a hash table
    (:func:`~segwatch.collector.kernels.factorize_slices`) that numbers them as they first appear;
    else :func:`numpy_factorize_slices`.
    """
    if not kernels.COMPILED:
        return numpy_factorize_slices(buf, start, length)
    codes, firsts = kernels.factorize_slices(buf, start, length)
    data = buf.data
    distinct = [
        bytes(data[s : s + n])
        for s, n in zip(start[firsts].tolist(), length[firsts].tolist(), strict=True)
    ]
    return codes, distinct


def numpy_factorize_slices(
    buf: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], list[bytes]]:
    """:func:`factorize_slices` with numpy only.

    Slices up to ``KEY_WIDTH`` bytes are hashed as padded rows (collisions
    are checked, not assumed away); longer ones go through a dict.
    """
    codes = np.zeros(len(start), dtype=np.int64)
    distinct: list[bytes] = []
    short = np.flatnonzero(length <= KEY_WIDTH)
    if len(short):
        width = max(8, int(length[short].max() + 7) // 8 * 8)
        windows = np.lib.stride_tricks.sliding_window_view(buf, width)
        rows = windows[start[short]]  # a copy: fancy indexing
        rows[np.arange(width) >= length[short, None]] = 0
        words = rows.view(np.uint64)
        digest = length[short].astype(np.uint64)
        for column in range(words.shape[1]):
            digest = digest * np.uint64(0x100000001B3) ^ words[:, column]
        _, first, inverse = np.unique(digest, return_index=True, return_inverse=True)
        if not (rows == rows[first[inverse]]).all():
            raise NotSimple  # a hash collision: vanishingly rare, and never silently wrong
        order = np.argsort(first)  # number the slices in the order they first appear
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        codes[short] = rank[inverse]
        first = first[order]
        sizes = length[short][first].tolist()
        distinct = [rows[i, :n].tobytes() for i, n in zip(first.tolist(), sizes, strict=True)]
    long = np.flatnonzero(length > KEY_WIDTH)
    if len(long):
        seen = {value: code for code, value in enumerate(distinct)}
        for i, s, n in zip(long.tolist(), start[long].tolist(), length[long].tolist(), strict=True):
            value = buf[s : s + n].tobytes()
            code = seen.get(value)
            if code is None:
                code = seen[value] = len(distinct)
                distinct.append(value)
            codes[i] = code
    return codes, distinct
