"""A training set uploaded to the local API (``POST /api/v1/baseline``), read as a table.

The body is streamed to a temporary file a MiB at a time (an upload may be far
larger than the API's other bodies), then read as ``segwatch baseline FILE``
reads its file. Bad input is a :class:`UploadError` (a ``ValueError``: the API
answers 400) naming what is wrong.
"""

from __future__ import annotations

import io
import tempfile
from http.server import BaseHTTPRequestHandler
from typing import IO, Any
from urllib.parse import parse_qs

from segwatch.collector.profile.profiles import read_table

from .api_door import UPLOAD_TYPES, body_type

__all__ = ["BaselineUpload", "UploadError", "read_upload"]

BaselineUpload = tuple[dict[str, str], Any]
"""The profile's fields (``model``, ``version``, ``name``) and the table read."""


class UploadError(ValueError):
    """An upload the API refuses (400), with what is wrong."""


def read_upload(handler: BaseHTTPRequestHandler, query: str) -> BaselineUpload:
    """The fields of the request's query string and the table its body holds."""
    params = parse_qs(query, keep_blank_values=True)
    if "path" in params:
        raise UploadError(
            "the collector reads no file paths: send the training set's bytes as the "
            "request body (segwatch baseline FILE does)"
        )
    fields = {}
    for key, default in (("model", None), ("version", ""), ("name", "training")):
        values = params.get(key, [] if default is None else [default])
        if len(values) != 1 or (key != "version" and not values[0]):
            raise UploadError(f"query parameter {key!r} must be given once, not empty")
        fields[key] = values[0]
    content_type = body_type(handler.headers)
    length = int(handler.headers["Content-Length"])
    with tempfile.NamedTemporaryFile(
        prefix="segwatch-baseline-", suffix=UPLOAD_TYPES[content_type]
    ) as spooled:
        _copy(handler.rfile, spooled, length)
        spooled.flush()
        try:
            table = read_table(spooled.name)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UploadError(str(exc).replace(spooled.name, "the uploaded file")) from exc
    return fields, table


def _copy(source: io.BufferedIOBase, target: IO[bytes], length: int) -> None:
    """``length`` bytes from ``source`` to ``target``, a MiB at a time."""
    remaining = length
    while remaining:
        chunk = source.read(min(remaining, 1 << 20))
        if not chunk:
            raise UploadError(f"the body ended after {length - remaining} of {length} bytes")
        target.write(chunk)
        remaining -= len(chunk)
