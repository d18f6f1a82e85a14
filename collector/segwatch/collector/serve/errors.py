"""ServeError: a refusal or an engine error, answered the way a ClickHouse server answers it.

ClickHouse clients read an error from three places: the HTTP status, the
``X-ClickHouse-Exception-Code`` header and the body, ``Code: N. DB::Exception:
<message> (<NAME>) (version V)``. clickhouse-connect raises its usual
``DatabaseError`` with ``code`` set from them, so a caller can tell a retryable
error from a permanent one whichever door it came through.
"""

from __future__ import annotations

import re

__all__ = ["ServeError", "engine_error", "http_status"]

# The codes the door raises itself (ClickHouse's src/Common/ErrorCodes.cpp).
CODES = {
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED": 27,
    "BAD_ARGUMENTS": 36,
    "NOT_IMPLEMENTED": 48,
    "SYNTAX_ERROR": 62,
    "UNKNOWN_FORMAT": 73,
    "UNKNOWN_TYPE_OF_QUERY": 78,
    "UNKNOWN_SETTING": 115,
    "READONLY": 164,
    "UNKNOWN_USER": 192,
    "REQUIRED_PASSWORD": 194,
    "TOO_MANY_SIMULTANEOUS_QUERIES": 202,
    "QUERY_IS_TOO_LARGE": 229,
    "CANNOT_DECOMPRESS": 271,
    "SESSION_NOT_FOUND": 372,
    "SESSION_IS_LOCKED": 373,
    "INVALID_SESSION_TIMEOUT": 374,
    "HTTP_LENGTH_REQUIRED": 381,
    "QUERY_WAS_CANCELLED": 394,
    "SETTING_CONSTRAINT_VIOLATION": 452,
    "ACCESS_DENIED": 497,
    "AUTHENTICATION_FAILED": 516,
    "STD_EXCEPTION": 1001,
}

# ClickHouse's exceptionCodeToHTTPStatus (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp), by
# error name; every other error is a 500, the door's own ones (sessions, slots) included.
_BAD_REQUEST = frozenset({
    "BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT",
    "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE",
    "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER", "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
    "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6", "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN", "UNKNOWN_ELEMENT_IN_AST",
    "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST",
    "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
    "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
})  # fmt: skip
_NOT_FOUND = frozenset({
    "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
    "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING",
    "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE",
    "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE",
})  # fmt: skip
_STATUS = {
    "REQUIRED_PASSWORD": 401,
    "UNKNOWN_USER": 403,
    "WRONG_PASSWORD": 403,
    "AUTHENTICATION_FAILED": 403,
    "SET_NON_GRANTED_ROLE": 403,
    "ACCESS_DENIED": 403,
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "CANNOT_SCHEDULE_TASK": 503,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    **{name: 400 for name in _BAD_REQUEST},
    **{name: 404 for name in _NOT_FOUND},
}

_CODE = re.compile(r"Code:\s*(\d+)\.")
_ENGINE_USER = "default: "
_PREFIX = re.compile(r"^Code:\s*\d+\.\s*DB::Exception:\s*")
_TRAILER = re.compile(r"(\s*\((?:version [^)]*|[A-Z][A-Z0-9_]+)\)|\s*\.)+\s*$")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?:\s*\(version [^)]*\))?\.?\s*$")


class ServeError(Exception):
    """An error to answer with: ClickHouse's code and name, and the message."""

    def __init__(self, name: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.code = code if code is not None else CODES[name]
        self.message = message

    @property
    def status(self) -> int:
        return http_status(self.name)

    def body(self, version: str) -> bytes:
        """The error as a ClickHouse server writes it, one line."""
        text = f"Code: {self.code}. DB::Exception: {self.message}. ({self.name})"
        return f"{text} (version {version})\n".encode()


def http_status(name: str) -> int:
    """The HTTP status ClickHouse answers an error of this name with (500 for the rest)."""
    return _STATUS.get(name, 500)


def engine_error(exc: BaseException, user: str = "default") -> ServeError:
    """The engine's exception as a :class:`ServeError`: its code, name and message.

    chdb raises ``Code: 60. DB::Exception: <message>. (UNKNOWN_TABLE)``, sometimes
    wrapped in a second ``Code: N. DB::Exception:`` of the same error; the
    innermost message is the one a server would send. The engine runs every session
    as its own user ``default`` and names it in refusals (``default: Cannot execute
    query in readonly mode``): a server would name the user who logged in, ``user``.
    """
    text = str(exc).strip()
    codes = _CODE.findall(text)
    code = int(codes[0]) if codes else 1000  # 1000: POCO_EXCEPTION, ClickHouse's "other"
    found = _NAME.search(text)
    name = found.group(1) if found else "STD_EXCEPTION"
    message = text
    while True:  # strip every "Code: N. DB::Exception: " prefix, then the trailers
        stripped = _PREFIX.sub("", message, count=1)
        stripped = _TRAILER.sub("", stripped)
        if stripped == message:
            break
        message = stripped
    if message.startswith(_ENGINE_USER):
        message = f"{user}: {message[len(_ENGINE_USER) :]}"
    return ServeError(name, message or name, code)
