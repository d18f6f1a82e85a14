"""ApiDoor: who may use the local API, checked before a request's body is read.

The API offers read access to the store, so it is locked even on loopback,
where any local process and any web page the machine's browser opens can
reach it:

- a bearer token on every ``/api/`` request (``Authorization: Bearer <t>``):
  the one given (``SEGWATCH_API_TOKEN``), else a random one made at each
  start and handed to the CLI through the discovery file (mode 0600);
- the ``Host`` header must name the address the API is bound to (with
  ``localhost`` and ``127.0.0.1`` accepted on loopback): a page that rebinds
  its own DNS name to 127.0.0.1 sends its own name, and is refused;
- a POST body must be JSON (or, on the baseline route, a CSV or parquet
  file): HTML forms can send only form encodings and ``text/plain`` without a
  CORS preflight, which this API never grants.

Bound to a wildcard address (``0.0.0.0``, ``::``) the API cannot know every
name it is reached by: there the Host is not checked, and the token, which
binding beyond loopback requires, is what keeps strangers out.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

from segwatch.collector.config.endpoints import is_loopback, is_wildcard

__all__ = ["UPLOAD_TYPES", "ApiDoor", "Refusal", "body_type"]

JSON = "application/json"
UPLOAD_TYPES = {"text/csv": ".csv", "application/vnd.apache.parquet": ".parquet"}
"""What a baseline upload may be, and the file suffix the reader needs for it."""


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer refusing a request: status code, message, extra headers."""

    code: int
    message: str
    headers: Mapping[str, str] | None = None


def body_type(headers: Message) -> str:
    """The request's Content-Type without its parameters, lowercased ("" when absent)."""
    return (headers.get("Content-Type") or "").split(";")[0].strip().lower()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ApiDoor:
    """The API's checks; ``token`` None makes a random one (``token`` then says which)."""

    def __init__(self, token: str | None) -> None:
        self.token_given = token is not None
        self.token = token if token is not None else secrets.token_urlsafe(32)
        self._expected = f"Bearer {self.token}".encode()
        self._hosts: frozenset[str] | None = None

    def bind(self, host: str, port: int) -> None:
        """Accept the Host headers naming ``host:port`` (the bound address) from now on."""
        if is_wildcard(host):
            self._hosts = None
            return
        names = {host}
        if is_loopback(host):
            names |= {"localhost", "127.0.0.1", "::1"}
        hosts = {_host_port(name, port) for name in names}
        if port == 80:  # the default port goes without saying
            hosts |= {f"[{name}]" if ":" in name else name for name in names}
        self._hosts = frozenset(h.lower() for h in hosts)

    def refusal(
        self, method: str, route: str, headers: Message, upload: bool = False
    ) -> Refusal | None:
        """Why this request may not go on (None: it may); ``upload``: a baseline file route."""
        host = (headers.get("Host") or "").strip().lower()
        if self._hosts is not None and host not in self._hosts:
            expected = " or ".join(sorted(self._hosts))
            return Refusal(403, f"Host {host or '(none)'!r} is not this API's address "
                                f"({expected})")  # fmt: skip
        given = (headers.get("Authorization") or "").encode()
        if not hmac.compare_digest(given, self._expected):
            return Refusal(401, "missing or wrong bearer token (the CLI reads it from the "
                                "discovery file segwatch-collector.json)",
                           {"WWW-Authenticate": 'Bearer realm="segwatch"'})  # fmt: skip
        if method != "POST":
            return None
        content_type = body_type(headers)
        if upload and content_type not in UPLOAD_TYPES:
            return Refusal(415, f"{route} takes the training set's bytes, as "
                                f"{' or '.join(UPLOAD_TYPES)}, not {content_type or 'nothing'}"
                                "; the collector reads no file paths")  # fmt: skip
        if not upload and content_type != JSON:
            return Refusal(415, f"the request body must be {JSON}, not "
                                f"{content_type or 'without a Content-Type'}")  # fmt: skip
        return None
