"""The writer of ``ml.batch.columns``: a batch's columns in one bytes attribute (version 1).

The format is docs/batch-columns.md; its constants live in
:mod:`.batch_format`. This is one of its two ends: the collector's
``segwatch.collector.decode.batch_columns`` reads what this module writes
(with numpy, in the collector; this side runs in the monitored services).
Pure standard library (``array``, ``json``, ``struct``): numpy arrays are
accepted through their ``tolist``/``tobytes`` without importing numpy here.
"""

from __future__ import annotations

import json
import math
import struct
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from .batch_format import ALIGNMENT, FIXED_HEADER, MAGIC, ROW_BYTES, VERSION

__all__ = ["encode_columns"]

# array("d"/"q"/"i") write native byte order; the format is little-endian.
_NATIVE_LITTLE_ENDIAN = struct.pack("=i", 1) == struct.pack("<i", 1) and array("i").itemsize == 4


def _pad(buffer: bytearray) -> None:
    buffer.extend(b"\0" * (-len(buffer) % ALIGNMENT))


def _kind(values: Sequence[Any]) -> str:
    kinds = set()
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            kinds.add("bool")
        elif isinstance(value, int):
            kinds.add("int64")
        elif isinstance(value, float):
            kinds.add("float64")
        else:
            kinds.add("category")
    if not kinds or kinds == {"bool"}:
        return "bool" if kinds else "float64"
    if kinds <= {"int64"}:
        return "int64"
    if kinds <= {"int64", "float64"}:
        return "float64"
    return "category"


def _as_list(values: Any) -> list[Any]:
    tolist = getattr(values, "tolist", None)  # numpy arrays, pandas Series
    result = tolist() if callable(tolist) else list(values)
    return [None if _is_null(v) else v for v in result]


def _is_null(value: Any) -> bool:
    return value is None or type(value).__name__ in {"NAType", "NaTType"}


def encode_columns(columns: Mapping[str, Any], rows: int) -> bytes:
    """Encode ``columns`` (name → ``rows`` values each) in the version-1 layout.

    Values are Python scalars, numpy arrays or pandas Series; ``None`` (and
    pandas NA) is MISSING. A column of mixed types is encoded as text
    categories. Raises ``ValueError`` when a column's length is not ``rows``.
    """
    if not _NATIVE_LITTLE_ENDIAN:
        raise RuntimeError("ml.batch.columns needs a little-endian platform with 4-byte int")
    header_columns: list[dict[str, Any]] = []
    buffers: list[tuple[bytes | None, bytes]] = []
    for name, raw in columns.items():
        fast = _numeric_buffer(raw)
        if fast is not None:
            kind, data = fast
            if len(data) != rows * ROW_BYTES[kind]:
                raise ValueError(f"column {name!r} does not have {rows} values")
            header_columns.append({"name": name, "type": kind, "nulls": False})
            buffers.append((None, data))
            continue
        factorized = _category_buffers(raw, rows)
        if factorized is not None:
            categories, validity, data = factorized
            header_columns.append({"name": name, "type": "category", "nulls": validity is not None,
                                   "categories": categories})  # fmt: skip
            buffers.append((validity, data))
            continue
        values = _as_list(raw)
        if len(values) != rows:
            raise ValueError(f"column {name!r} has {len(values)} values for {rows} rows")
        kind = _kind(values)
        has_nulls = any(v is None for v in values)
        entry: dict[str, Any] = {"name": name, "type": kind, "nulls": has_nulls}
        validity = _bitmap([v is not None for v in values]) if has_nulls else None
        if kind == "float64":
            data = array("d", (0.0 if v is None else float(v) for v in values)).tobytes()
        elif kind == "int64":
            data = array("q", (0 if v is None else int(v) for v in values)).tobytes()
        elif kind == "bool":
            data = bytes(1 if v else 0 for v in values)
        else:
            index: dict[str, int] = {}
            codes = array("i", (0 if v is None else index.setdefault(_text(v), len(index))
                                for v in values))  # fmt: skip
            entry["categories"] = list(index)
            data = codes.tobytes()
        header_columns.append(entry)
        buffers.append((validity, data))
    header = json.dumps({"rows": rows, "columns": header_columns}, separators=(",", ":")).encode()
    out = bytearray(FIXED_HEADER.pack(MAGIC, VERSION, len(header)))
    out.extend(header)
    for validity, data in buffers:
        _pad(out)
        if validity is not None:
            out.extend(validity)
            _pad(out)
        out.extend(data)
    return bytes(out)


def _numeric_buffer(raw: Any) -> tuple[str, bytes] | None:
    """A numpy array or pandas Series of numbers, straight to bytes (no per-row Python)."""
    kind = getattr(getattr(raw, "dtype", None), "kind", None)
    if kind not in ("f", "i", "u", "b") or getattr(raw, "ndim", 1) != 1:
        return None
    if hasattr(raw, "to_numpy"):  # pandas: nullable dtypes may hold NA
        if bool(raw.isna().any()):
            if kind == "b":
                return None  # booleans with NA: categories with a validity bitmap
            # NaN and NA as NaN, which the collector counts MISSING: the numbers stay
            # numbers (the category path would send them as text).
            numbers = raw.to_numpy(dtype="float64", na_value=math.nan)
            return "float64", bytes(numbers.astype("<f8").tobytes())
        raw = raw.to_numpy()
    if kind == "f":
        return "float64", bytes(raw.astype("<f8").tobytes())
    if kind in ("i", "u"):
        return "int64", bytes(raw.astype("<i8").tobytes())
    return "bool", bytes(raw.astype("u1").tobytes())


def _category_buffers(raw: Any, rows: int) -> tuple[list[str], bytes | None, bytes] | None:
    """A pandas Series of text (or other objects), factorized without a Python loop per row.

    numpy is imported here only when pandas already is (the Series came from it).
    """
    factorize = getattr(raw, "factorize", None)
    if not callable(factorize) or getattr(raw, "ndim", 1) != 1 or len(raw) != rows:
        return None
    import numpy as np  # loaded already: pandas depends on it

    codes, uniques = factorize(use_na_sentinel=True)
    categories = [value if type(value) is str else _text(value) for value in uniques.tolist()]
    if len(set(categories)) != len(categories):
        return None  # e.g. 1 and "1" in one column: let the generic path merge them
    valid = codes >= 0
    validity = None
    if not valid.all():
        validity = bytes(np.packbits(valid, bitorder="little").tobytes())
        codes = np.where(valid, codes, 0)
    return categories, validity, bytes(codes.astype("<i4").tobytes())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    return str(value)


def _bitmap(valid: list[bool]) -> bytes:
    out = bytearray((len(valid) + 7) // 8)
    for i, ok in enumerate(valid):
        if ok:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)
