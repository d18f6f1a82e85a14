"""LocalApi: the collector's HTTP API, for the CLI and for probes and scrapers.

``POST /api/v1/sql`` (read-only), ``POST /api/v1/anomalies``,
``POST /api/v1/detect``, ``POST /api/v1/baseline`` (loads a file on this
machine) and ``GET /api/v1/status``; JSON in, JSON out. Binds to loopback by
default: it offers read access to the store. Bound anywhere else it needs a
token (``SEGWATCH_API_TOKEN``, or the variable ``api.token_env`` names), and
every ``/api/`` request must carry it as ``Authorization: Bearer <token>``.

``GET /healthz`` (the process answers), ``GET /readyz`` (it can take data:
503 with the reasons when not) and ``GET /metrics`` (Prometheus) are open,
as probes and scrapers expect; they reveal no data.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from segwatch.clickhouse.detection import DetectorSpec
from segwatch.clickhouse.queries import AnomalyFilter, list_anomalies, read_only_query

from .access import detect_table
from .config import API_TOKEN_ENV, CollectorConfig, parse_endpoint
from .metrics import CONTENT_TYPE
from .profiles import load_profile, read_table

__all__ = ["LocalApi"]

_logger = logging.getLogger(__name__)
_MAX_BODY = 1024 * 1024


class _BadRequest(ValueError):
    pass


class LocalApi:
    """HTTP server on ``endpoint``; ``start()`` returns once the port is bound."""

    def __init__(
        self,
        endpoint: str,
        client: Client,
        status: Callable[[], dict[str, Any]],
        detectors: list[DetectorSpec] | None = None,
        config: CollectorConfig | None = None,
        sql_client: Client | None = None,
        on_baseline: Callable[[], object] | None = None,
        before_read: Callable[[], object] | None = None,
        token: str | None = None,
        readiness: Callable[[], list[str]] | None = None,
        metrics: Callable[[], bytes] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._token = f"Bearer {token}".encode() if token else None
        self._readiness = readiness  # what stops the collector taking data; [] when ready
        self._metrics = metrics
        self._config = config
        # Analysts' SQL runs on its own readonly session: a per-query readonly
        # setting would stay on the session and stop the API's own writes.
        self._sql_client = sql_client or client
        self._on_baseline = on_baseline  # e.g. switch to the new profile's quantile buckets
        # Read your writes: what the collector acknowledged is flushed before a query.
        self._before_read = before_read
        self._client = client
        self._detectors = detectors
        self._status = status
        self._lock = threading.Lock()  # one query at a time through this client
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        host, port = parse_endpoint(self._endpoint)
        if self._token is None and not _is_loopback(host):
            raise ValueError(
                f"the API on {self._endpoint} would be reachable from other machines without a "
                f"token: set {API_TOKEN_ENV} (or the variable api.token_env names), or bind it "
                "to 127.0.0.1"
            )
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api._handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > _MAX_BODY:
                    api._reply(self, 413, {"error": f"request body over {_MAX_BODY} bytes"})
                    return
                api._handle(self, self.rfile.read(length))

            def log_message(self, format: str, *args: Any) -> None:
                _logger.debug("api: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="segwatch-api", daemon=True
        )
        self._thread.start()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        route = (handler.command, handler.path.split("?")[0])
        if self._probe(handler, route):
            return
        if self._token is not None:
            given = (handler.headers.get("Authorization") or "").encode()
            if not hmac.compare_digest(given, self._token):
                self._reply(handler, 401, {"error": "missing or wrong bearer token"},
                            {"WWW-Authenticate": 'Bearer realm="segwatch"'})  # fmt: skip
                return
        try:
            request = json.loads(body) if body else {}
            if not isinstance(request, dict):
                raise _BadRequest("the request body must be a JSON object")
            with self._lock:
                reply = self._route(route, request)
        except (_BadRequest, ValueError) as exc:
            self._reply(handler, 400, {"error": str(exc)})
        except ClickHouseError as exc:
            self._reply(handler, 400, {"error": str(exc)})
        except LookupError:
            self._reply(handler, 404, {"error": f"no route {route[0]} {route[1]}"})
        except Exception as exc:  # the API must answer, whatever went wrong
            _logger.exception("api request failed")
            self._reply(handler, 500, {"error": str(exc)})
        else:
            self._reply(handler, 200, reply)

    def _route(self, route: tuple[str, str], request: dict[str, Any]) -> dict[str, Any]:
        if route[0] == "POST" and self._before_read is not None:
            self._before_read()
        if route == ("GET", "/api/v1/status"):
            return {"pid": os.getpid(), **self._status()}
        if route == ("POST", "/api/v1/sql"):
            query = request.get("query")
            if not isinstance(query, str) or not query.strip():
                raise _BadRequest("'query' must be a non-empty string")
            return read_only_query(self._sql_client, query).to_json()
        if route == ("POST", "/api/v1/anomalies"):
            try:
                selection = AnomalyFilter.from_json(request)
            except (TypeError, ValueError) as exc:
                raise _BadRequest(str(exc)) from exc
            return list_anomalies(self._client, selection).to_json()
        if route == ("POST", "/api/v1/baseline"):
            fields = {k: request.get(k) for k in ("path", "model", "version", "name")}
            if not all(isinstance(v, str) for v in fields.values()) or not fields["path"]:
                raise _BadRequest("'path', 'model', 'version' and 'name' must be strings")
            rows = load_profile(self._client, read_table(str(fields["path"])),
                                model=str(fields["model"]), version=str(fields["version"]),
                                name=str(fields["name"]), config=self._config)  # fmt: skip
            if self._on_baseline is not None:
                self._on_baseline()
            return {"rows": rows}
        if route == ("POST", "/api/v1/detect"):
            at_text = request.get("at")
            at = dt.datetime.fromisoformat(at_text) if at_text else None
            return detect_table(self._client, at, self._detectors).to_json()
        raise LookupError(route)

    def _probe(self, handler: BaseHTTPRequestHandler, route: tuple[str, str]) -> bool:
        """Answer the health, readiness and metrics endpoints; False for any other route."""
        if route == ("GET", "/healthz"):
            self._reply(handler, 200, {"status": "ok"})
        elif route == ("GET", "/readyz"):
            problems = self._readiness() if self._readiness is not None else []
            code = 503 if problems else 200
            self._reply(handler, code, {"ready": not problems, "problems": problems})
        elif route == ("GET", "/metrics") and self._metrics is not None:
            self._send(handler, 200, self._metrics(), CONTENT_TYPE)
        else:
            return False
        return True

    @classmethod
    def _reply(
        cls,
        handler: BaseHTTPRequestHandler,
        code: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        cls._send(handler, code, json.dumps(payload).encode(), "application/json", headers)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        code: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere
