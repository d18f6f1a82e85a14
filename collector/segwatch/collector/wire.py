"""Protobuf wire format, read with numpy: varints at many positions at once."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["NotSimple", "varints"]


class NotSimple(Exception):
    """The request has something only the reference decoder handles."""


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
