"""The ``ml.batch.columns`` format's constants, in one place (docs/batch-columns.md).

Two modules speak the format and both take its constants from here: the
writer, :mod:`segwatch.instrumentation.batch_columns` (in the services, pure
standard library), and the reader, ``segwatch.collector.decode.batch_columns``
(in the collector, numpy views). The collector may import the instrumentation;
the instrumentation never imports the collector, so this module lives here.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Final

__all__ = [
    "ALIGNMENT",
    "COLUMN_PREFIXES",
    "FIXED_HEADER",
    "LITTLE_ENDIAN_DTYPE",
    "MAGIC",
    "ROW_BYTES",
    "VERSION",
]

MAGIC: Final = b"SWBC"
"""The first four bytes of every payload."""

VERSION: Final = 1
"""The layout version this code writes and reads; a reader refuses any other."""

FIXED_HEADER: Final = struct.Struct("<4sB3xI")
"""Magic, version, three reserved zero bytes, then the JSON header's length (uint32)."""

ALIGNMENT: Final = 8
"""Each column buffer (validity bitmap, values) starts at a multiple of this, from byte 0."""

ROW_BYTES: Final[Mapping[str, int]] = {"float64": 8, "int64": 8, "bool": 1, "category": 4}
"""The column types, and the bytes each row's value takes in the values buffer."""

LITTLE_ENDIAN_DTYPE: Final[Mapping[str, str]] = {
    "float64": "<f8",
    "int64": "<i8",
    "bool": "u1",
    "category": "<i4",
}
"""Each column type's values as a numpy dtype (a category is a signed code into its list)."""

COLUMN_PREFIXES: Final = ("feature.", "output.", "metric.", "context.")
"""A column's name is one of these, then the name (the attribute name without ``ml.``)."""
