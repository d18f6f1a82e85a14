"""ClickHouseRequest: an HTTP request read as ClickHouse's HTTP handler reads it.

URL parameters are the query (``query``), the transport's own options
(:data:`TRANSPORT`), query parameters (``param_<name>``) and, everything else,
settings for the query. Credentials come from ``X-ClickHouse-User`` /
``X-ClickHouse-Key``, HTTP basic auth, or the ``user`` / ``password``
parameters: one way only, as ClickHouse insists. A ``multipart/form-data``
POST carries the query and its parameters as form fields (clickhouse-connect
sends long query parameters that way).

The body arrives with a ``Content-Length`` or chunked, and compressed or not
(``Content-Encoding``: gzip, deflate, zstd, lz4, what clickhouse-connect
sends); :class:`BodyStream` yields it decoded, a piece at a time, so a large
insert never sits in memory.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import IO, Any
from urllib.parse import parse_qsl

from .errors import ServeError

__all__ = ["TRANSPORT", "BodyStream", "ClickHouseRequest", "parse_request"]

TRANSPORT = frozenset({
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "user", "password", "quota_key", "compress", "decompress",
    "buffer_size", "wait_end_of_query", "client_protocol_version", "enable_http_compression",
    "role", "stacktrace", "http_response_buffer_size",
})  # fmt: skip
"""URL parameters the door itself reads; no setting of the engine."""

_PIECE = 1 << 20
MAX_FORM_BYTES = 16 << 20
"""A multipart body holds a query and its parameters; past this (decompressed) it is refused."""


@dataclass
class ClickHouseRequest:
    method: str
    path: str
    user: str = "default"
    password: str = ""
    credentials_given: bool = False
    query: str = ""
    """The ``query`` URL parameter (the body, if any, follows it)."""
    database: str = ""
    default_format: str = ""
    query_id: str = ""
    session_id: str = ""
    session_timeout: float | None = None
    session_check: bool = False
    compress_response: str = ""
    """The Content-Encoding to answer with ("" for none)."""
    settings: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    form_body: bool = False
    """The body was form fields, not query text or data."""


def parse_request(
    method: str,
    target: str,
    headers: Message,
    body: BodyStream,
    authenticate: Callable[[ClickHouseRequest], object],
) -> ClickHouseRequest:
    """Read the request's options; a multipart body is read here (its fields join the URL's),
    after ``authenticate`` accepted the credentials: a stranger's body is never read."""
    path, _, query_string = target.partition("?")
    params = dict(parse_qsl(query_string, keep_blank_values=True))
    request = ClickHouseRequest(method, path)
    _credentials(request, params, headers)
    authenticate(request)
    if _form_type(headers):
        params.update(_form_fields(headers, body))
        request.form_body = True
    request.query = params.get("query", "")
    request.database = params.get("database", headers.get("X-ClickHouse-Database", ""))
    request.default_format = params.get("default_format", headers.get("X-ClickHouse-Format", ""))
    request.query_id = params.get("query_id", "")
    request.session_id = params.get("session_id", "")
    request.session_check = params.get("session_check", "0") not in ("", "0")
    if "session_timeout" in params:
        request.session_timeout = _session_timeout(params["session_timeout"])
    if params.get("compress", "0") not in ("", "0") or params.get("decompress", "0") not in (
        "",
        "0",
    ):
        raise ServeError(
            "NOT_IMPLEMENTED",
            "compress=1 and decompress=1 (ClickHouse's own block compression) are not served "
            "here; use HTTP compression (Content-Encoding, Accept-Encoding)",
        )
    if params.get("enable_http_compression", "0") not in ("", "0"):
        request.compress_response = _response_encoding(headers.get("Accept-Encoding", ""))
    for name, value in params.items():
        if name.startswith("param_"):
            request.parameters[name[len("param_") :]] = value
        elif name not in TRANSPORT:
            request.settings[name] = value
    return request


def _credentials(request: ClickHouseRequest, params: dict[str, str], headers: Message) -> None:
    ways = []
    if headers.get("X-ClickHouse-User") is not None or headers.get("X-ClickHouse-Key") is not None:
        ways.append(
            (headers.get("X-ClickHouse-User", "default"), headers.get("X-ClickHouse-Key", ""))
        )
    authorization = headers.get("Authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(authorization[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ServeError(
                "AUTHENTICATION_FAILED", "the Authorization header is not valid basic auth"
            ) from None
        ways.append((user, password))
    if "user" in params or "password" in params:
        ways.append((params.get("user", "default"), params.get("password", "")))
    if len(ways) > 1:
        raise ServeError(
            "AUTHENTICATION_FAILED",
            "credentials given in more than one way: use X-ClickHouse-User/-Key, basic auth or "
            "the user/password parameters, one of them",
        )
    if ways:
        request.user, request.password = ways[0]
        request.credentials_given = True


def _session_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1
    if not 0 < seconds <= 3600:
        raise ServeError(
            "INVALID_SESSION_TIMEOUT",
            f"Invalid session timeout: '{text}' (seconds, at most 3600)",
        )
    return seconds


def _form_type(headers: Message) -> bool:
    return (headers.get("Content-Type") or "").lower().startswith("multipart/form-data")


def _form_fields(headers: Message, body: BodyStream) -> dict[str, str]:
    """The text fields of a multipart/form-data body (the query, its parameters)."""
    raw = bytearray()
    for piece in body:
        raw += piece
        if len(raw) > MAX_FORM_BYTES:
            raise ServeError(
                "QUERY_IS_TOO_LARGE", f"the form body is larger than {MAX_FORM_BYTES} bytes"
            )
    envelope = f"Content-Type: {headers.get('Content-Type')}\r\n\r\n".encode() + bytes(raw)
    message = BytesParser(policy=HTTP).parsebytes(envelope)
    fields: dict[str, str] = {}
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        if part.get_filename():
            raise ServeError(
                "NOT_IMPLEMENTED", f"external data (the file field {name!r}) is not served here"
            )
        payload = part.get_payload(decode=True)
        fields[name] = payload.decode() if isinstance(payload, bytes) else str(payload)
    return fields


def _response_encoding(accept: str) -> str:
    """The first encoding of Accept-Encoding this door can write ("" for none)."""
    for item in accept.split(","):
        name = item.split(";")[0].strip().lower()
        if name in _ENCODERS:
            return name
    return ""


class BodyStream:
    """A request body, decoded and decompressed, as an iterator of pieces; read once.

    ``rfile`` is the connection; ``headers`` say how long the body is and how it
    is encoded. :attr:`consumed` tells whether the connection can carry another
    request (every byte of this one was read).
    """

    def __init__(self, rfile: IO[bytes], headers: Message) -> None:
        self._rfile = rfile
        self._chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        length = headers.get("Content-Length")
        if not self._chunked and length is not None and not length.strip().isdigit():
            raise ServeError("BAD_ARGUMENTS", f"Content-Length {length!r} is not a number")
        self._remaining = int(length) if length is not None and not self._chunked else 0
        encoding = (headers.get("Content-Encoding") or "").strip().lower()
        if encoding not in ("", "identity") and encoding not in _DECODERS:
            raise ServeError(
                "CANNOT_DECOMPRESS",
                f"Content-Encoding {encoding!r} is not served (gzip, deflate, zstd, lz4)",
            )
        self._decoder = _DECODERS[encoding]() if encoding in _DECODERS else None
        self.consumed = not self._chunked and self._remaining == 0
        # Neither a length nor chunks: a POST so sent is refused (its body would be read as
        # the next request).
        self.length_unknown = not self._chunked and length is None
        self._started = False

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("a request body is read once")
        self._started = True
        for piece in self._raw():
            if self._decoder is None:
                yield piece
                continue
            try:
                decoded = self._decoder.decompress(piece)
            except Exception as exc:
                raise ServeError(
                    "CANNOT_DECOMPRESS", f"the body does not decompress: {exc}"
                ) from exc
            if decoded:
                yield decoded
        self.consumed = True

    def drain(self) -> None:
        """Read what is left of the body, so the connection can take the next request."""
        if not self._started:
            self._started = True
            for _ in self._raw():
                pass
        self.consumed = True

    def _raw(self) -> Iterator[bytes]:
        if self._chunked:
            yield from self._chunks()
            return
        while self._remaining:
            piece = self._rfile.read(min(self._remaining, _PIECE))
            if not piece:
                raise ServeError("CANNOT_PARSE_INPUT_ASSERTION_FAILED", "the body ended early")
            self._remaining -= len(piece)
            yield piece

    def _chunks(self) -> Iterator[bytes]:
        while True:
            line = self._rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ServeError("BAD_ARGUMENTS", f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            remaining = size
            while remaining:
                piece = self._rfile.read(min(remaining, _PIECE))
                if not piece:
                    raise ServeError("CANNOT_PARSE_INPUT_ASSERTION_FAILED", "a chunk ended early")
                remaining -= len(piece)
                yield piece
            self._rfile.readline(16)  # the chunk's CRLF


class _Zlib:
    def __init__(self, wbits: int) -> None:
        self._inner = zlib.decompressobj(wbits)

    def decompress(self, data: bytes) -> bytes:
        return self._inner.decompress(data)


def _zstd_module() -> Any:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        from backports import zstd
    return zstd


def _decoders() -> dict[str, Any]:
    # lz4 and the zstd bindings are clickhouse-connect's own dependencies.
    import lz4.frame  # type: ignore[import-untyped]

    return {
        "gzip": lambda: _Zlib(16 + zlib.MAX_WBITS),
        "x-gzip": lambda: _Zlib(16 + zlib.MAX_WBITS),
        "deflate": lambda: _Zlib(zlib.MAX_WBITS),
        "lz4": lz4.frame.LZ4FrameDecompressor,
        "zstd": lambda: _zstd_module().ZstdDecompressor(),
    }


def _encoders() -> Mapping[str, Any]:
    import gzip

    import lz4.frame

    return {
        "gzip": lambda data: gzip.compress(data, compresslevel=3),
        "deflate": lambda data: zlib.compress(data, 3),
        "lz4": lz4.frame.compress,
        "zstd": lambda data: _zstd_module().compress(data),
    }


_DECODERS = _decoders()
_ENCODERS = _encoders()


def encode_response(data: bytes, encoding: str) -> bytes:
    """``data`` compressed with ``encoding`` (one :func:`parse_request` chose)."""
    return _ENCODERS[encoding](data) if encoding else data
