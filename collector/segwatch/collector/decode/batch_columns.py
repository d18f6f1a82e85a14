"""The reader of ``ml.batch.columns``: a batch span's columns as numpy views (version 1).

The format is docs/batch-columns.md; its constants live in
:mod:`segwatch.instrumentation.batch_format`. This is one of its two ends: the
services write it with :mod:`segwatch.instrumentation.batch_columns` (pure
standard library); the collector reads it here, for :mod:`.batch_spans`.
Every length, offset and code is checked against the payload before a view
is made, so a malformed payload raises :class:`BatchColumnsError` naming the
problem and never reads outside the buffer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from segwatch.instrumentation.batch_format import (
    ALIGNMENT,
    COLUMN_PREFIXES,
    FIXED_HEADER,
    LITTLE_ENDIAN_DTYPE,
    MAGIC,
    ROW_BYTES,
    VERSION,
)

__all__ = ["BatchColumnsError", "DecodedColumn", "decode_columns"]

MAX_HEADER_BYTES = 16 * 1024 * 1024
"""The longest JSON header this reader accepts."""


class BatchColumnsError(ValueError):
    """A malformed ``ml.batch.columns`` payload."""


@dataclass(frozen=True)
class DecodedColumn:
    """One column: ``numbers`` (float64, NaN kept) or ``labels`` (object), and validity."""

    name: str
    valid: npt.NDArray[np.bool_]  # rows that have a value
    numbers: npt.NDArray[np.float64] | None
    labels: npt.NDArray[np.object_] | None


def decode_columns(payload: bytes, rows: int) -> list[DecodedColumn]:
    """Decode a version-1 payload whose header must say ``rows`` rows."""
    if len(payload) < FIXED_HEADER.size:
        raise BatchColumnsError("ml.batch.columns is shorter than its fixed header")
    magic, version, header_len = FIXED_HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise BatchColumnsError(f"ml.batch.columns magic {magic!r} is not {MAGIC!r}")
    if version != VERSION:
        raise BatchColumnsError(f"ml.batch.columns version {version} is not supported")
    end = FIXED_HEADER.size + header_len
    if header_len > MAX_HEADER_BYTES or end > len(payload):
        raise BatchColumnsError("ml.batch.columns header runs past the payload")
    try:
        header = json.loads(payload[FIXED_HEADER.size : end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BatchColumnsError(f"ml.batch.columns header is not JSON: {exc}") from exc
    specs = _validate_header(header, rows)
    offset = end
    out: list[DecodedColumn] = []
    for spec in specs:
        valid = np.ones(rows, dtype=bool)
        if spec["nulls"]:
            offset = _align(offset)
            size = (rows + 7) // 8
            bits = _view(payload, offset, size, "u1", spec["name"])
            valid = np.unpackbits(bits, count=rows, bitorder="little").astype(bool)
            offset += size
        offset = _align(offset)
        kind = spec["type"]
        data = _view(
            payload, offset, rows * ROW_BYTES[kind], LITTLE_ENDIAN_DTYPE[kind], spec["name"]
        )
        offset += rows * ROW_BYTES[kind]
        out.append(_column(spec, valid, data))
    if offset != len(payload):
        raise BatchColumnsError(
            f"ml.batch.columns has {len(payload) - offset} bytes after its last column"
        )
    return out


def _column(spec: dict[str, Any], valid: npt.NDArray[np.bool_], data: Any) -> DecodedColumn:
    kind = spec["type"]
    name = spec["name"]
    if kind in ("float64", "int64"):
        return DecodedColumn(name, valid, data.astype(np.float64), None)
    if kind == "bool":
        if (data[valid] > 1).any():
            raise BatchColumnsError(f"column {name!r}: bool values must be 0 or 1")
        labels = np.where(data != 0, "true", "false").astype(object)
        return DecodedColumn(name, valid, None, labels)
    categories = spec["categories"]
    codes = data.astype(np.int64)
    codes[~valid] = 0
    if len(codes) and (codes.min() < 0 or (len(categories) and codes.max() >= len(categories))):
        raise BatchColumnsError(f"column {name!r}: a category code is out of range")
    if not len(categories) and valid.any():
        raise BatchColumnsError(f"column {name!r}: codes but no categories")
    table = np.asarray(categories if categories else [""], dtype=object)
    return DecodedColumn(name, valid, None, table[codes])


def _validate_header(header: Any, rows: int) -> list[dict[str, Any]]:
    if not isinstance(header, dict) or not isinstance(header.get("columns"), list):
        raise BatchColumnsError("ml.batch.columns header must be an object with 'columns'")
    if header.get("rows") != rows:
        raise BatchColumnsError(
            f"ml.batch.columns says {header.get('rows')!r} rows, ml.batch.size says {rows}"
        )
    seen: set[str] = set()
    for spec in header["columns"]:
        if not isinstance(spec, dict):
            raise BatchColumnsError("each ml.batch.columns column must be an object")
        name = spec.get("name")
        if not isinstance(name, str) or not name.startswith(COLUMN_PREFIXES) or name.endswith("."):
            raise BatchColumnsError(f"column name {name!r} must be feature.*, output.*, ...")
        if name in seen:
            raise BatchColumnsError(f"column {name!r} appears twice")
        seen.add(name)
        if not isinstance(spec.get("type"), str) or spec["type"] not in ROW_BYTES:
            raise BatchColumnsError(f"column {name!r}: unknown type {spec.get('type')!r}")
        if not isinstance(spec.get("nulls"), bool):
            raise BatchColumnsError(f"column {name!r}: 'nulls' must be true or false")
        if spec["type"] == "category":
            categories = spec.get("categories")
            if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
                raise BatchColumnsError(f"column {name!r}: 'categories' must be strings")
    return list(header["columns"])


def _align(offset: int) -> int:
    return offset + (-offset % ALIGNMENT)


def _view(payload: bytes, offset: int, size: int, dtype: str, name: str) -> Any:
    if offset + size > len(payload):
        raise BatchColumnsError(f"column {name!r} runs past the end of ml.batch.columns")
    return np.frombuffer(payload, dtype=dtype, count=size // np.dtype(dtype).itemsize,
                         offset=offset)  # fmt: skip
