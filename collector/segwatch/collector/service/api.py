"""LocalApi: the collector's HTTP API, for the CLI and for probes and scrapers.

``POST /api/v1/sql`` (read-only), ``POST /api/v1/anomalies``,
``POST /api/v1/detect`` and ``GET /api/v1/status``: JSON in, JSON out.
``GET /report?model=M&since=24h``: the HTML page ``segwatch report`` writes
(read-only, on the analysts' budget; 400 naming a bad parameter, an unknown
model or the budget that ran out).
``POST /api/v1/baseline?model=M&version=V&name=N`` takes a training set's
bytes as its body (``text/csv`` or ``application/vnd.apache.parquet``, up to
``api.max_upload_mib``), streamed to a temporary file: the collector never
reads a path a client names.

Every ``/api/`` request must carry the token as ``Authorization: Bearer
<token>``, name the bound address in its ``Host`` header and, when it posts,
say its body's type (:mod:`segwatch.collector.service.api_door`). The token is
``SEGWATCH_API_TOKEN`` (or the variable ``api.token_env`` names), else a
random one per start that the CLI reads from the discovery file. Binds to
loopback by default; binding anywhere else needs a token from the environment.

``GET /healthz`` (the process answers), ``GET /readyz`` (it can take data:
503 with the reasons when not) and ``GET /metrics`` (Prometheus) are open,
as probes and scrapers expect; they reveal no data.

Requests are served concurrently, each on its own thread: analysts' queries
run side by side on sessions of their own, each on a budget and cancelled
when its client hangs up (:mod:`.analyst_queries`), so a slow query holds up
neither another query nor the probes, flushes or detector runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from segwatch.clickhouse.detection import DetectorSpec
from segwatch.clickhouse.queries import AnomalyFilter, list_anomalies, read_only_query
from segwatch.clickhouse.store import redact_dsn
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.detector_specs import labels_parameter
from segwatch.collector.config.endpoints import is_wildcard, parse_endpoint
from segwatch.collector.config.network import ApiConfig
from segwatch.collector.config.startup import unprotected_api
from segwatch.collector.errors import RetryableError
from segwatch.collector.metrics import CONTENT_TYPE
from segwatch.collector.profile.profiles import load_profile
from segwatch.collector.report import (
    PlotlyMissingError,
    ReadBudget,
    ReportBudgetError,
    ReportRequest,
    UnknownModelError,
    build_report_page,
    client_query,
)
from segwatch.collector.serve.listener import client_gone

from .analyst_queries import AnalystQueries, QueryBudgetError, QueryCancelledError
from .api_door import ApiDoor, Refusal
from .api_upload import read_upload
from .detect import DetectionResult, detect_table

__all__ = ["LocalApi"]

_logger = logging.getLogger(__name__)
_MAX_BODY = 1024 * 1024
_BASELINE = ("POST", "/api/v1/baseline")
_READS = {("POST", "/api/v1/sql"), ("POST", "/api/v1/anomalies"), ("POST", "/api/v1/detect")}
"""The routes that flush first, so they see everything acknowledged."""


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
        queries: AnalystQueries | None = None,
        requeue: Callable[[list[str]], int] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._door = ApiDoor(token or None)
        settings = config.api if config is not None else ApiConfig()
        self._max_upload = settings.max_upload_mib << 20
        self._readiness = readiness  # what stops the collector taking data; [] when ready
        self._metrics = metrics
        self._config = config
        # Analysts' SQL runs on its own readonly session: a per-query readonly
        # setting would stay on the session and stop the API's own writes.
        self._sql_client = sql_client or client
        self._queries = queries  # analysts' SQL on budgeted, cancellable sessions
        self._requeue = requeue  # sends dead letters back into the spool
        self._on_baseline = on_baseline  # e.g. switch to the new profile's quantile buckets
        # Read your writes: what the collector acknowledged is flushed before a query.
        self._before_read = before_read
        self._client = client
        self._detectors = detectors
        self._status = status
        self._lock = threading.Lock()  # one request at a time through ``client``
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def local_url(self) -> str:
        """Where a client on this machine reaches the API (loopback for a wildcard bind)."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        host = str(host)
        if is_wildcard(host):
            host = "::1" if ":" in host else "127.0.0.1"
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def token(self) -> str:
        """The bearer token requests must carry: the one given, or the one made at start."""
        return self._door.token

    def start(self) -> None:
        token_env = self._config.api.token_env if self._config is not None else None
        refusal = unprotected_api(self._endpoint, token=self._door.token_given, token_env=token_env)
        if refusal is not None:  # the rule validate applies (config.startup)
            raise ValueError(str(refusal))
        host, port = parse_endpoint(self._endpoint)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api._serve(self)

            def do_POST(self) -> None:
                api._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                _logger.debug("api: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:  # the port taken, or an address this machine does not have
            raise OSError(f"api.endpoint {self._endpoint}: {exc.strerror or exc}") from exc
        self._door.bind(host, int(self._server.server_address[1]))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="segwatch-api", daemon=True
        )
        self._thread.start()

    def shutdown(self) -> None:
        if self._queries is not None:
            self._queries.cancel_all()  # a running query must not hold the process
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one request: probes as they come, the rest once the door lets them in."""
        path, _, query = handler.path.partition("?")
        route = (handler.command, path)
        if self._probe(handler, route):
            return
        refusal = self._door.refusal(route[0], path, handler.headers, upload=route == _BASELINE)
        if refusal is None:
            refusal = self._check_length(handler, route)
        if refusal is not None:
            handler.close_connection = True  # its body, if any, stays unread
            self._reply(handler, refusal.code, {"error": refusal.message}, refusal.headers)
            return
        if route == _BASELINE:
            self._answer(handler, route, lambda: self._load_baseline(handler, query))
            return
        if route == ("GET", "/report"):
            self._report(handler, query)
            return
        self._answer(handler, route, lambda: self._run(handler, route))

    def _check_length(
        self, handler: BaseHTTPRequestHandler, route: tuple[str, str]
    ) -> Refusal | None:
        if route[0] != "POST":
            return None
        text = handler.headers.get("Content-Length")
        if text is None or not text.isdigit():
            return Refusal(411, "a POST needs a Content-Length")
        limit = self._max_upload if route == _BASELINE else _MAX_BODY
        if int(text) > limit:
            return Refusal(413, f"request body over {limit} bytes"
                           + (" (api.max_upload_mib)" if route == _BASELINE else ""))  # fmt: skip
        return None

    def _run(self, handler: BaseHTTPRequestHandler, route: tuple[str, str]) -> dict[str, Any]:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = json.loads(body) if body else {}
        if not isinstance(request, dict):
            raise _BadRequest("the request body must be a JSON object")
        if route in _READS and self._before_read is not None:
            self._before_read()  # read your writes: what was acknowledged is stored first
        if route == ("POST", "/api/v1/sql"):
            return self._sql(handler, request)
        if route == ("POST", "/api/v1/detect"):
            at_text = request.get("at")
            return self._detect(dt.datetime.fromisoformat(at_text) if at_text else None).to_json()
        with self._lock:
            return self._route(route, request)

    def detect(self, at: dt.datetime | None = None) -> DetectionResult:
        """Run the detectors now, for the windows ending ``at``, on everything acknowledged.

        Thread-safe: takes the API's client as its requests do (one at a time).
        """
        if self._before_read is not None:
            self._before_read()
        return self._detect(at)

    def _detect(self, at: dt.datetime | None) -> DetectionResult:
        with self._lock:
            return detect_table(self._client, at, self._detectors)

    def _sql(self, handler: BaseHTTPRequestHandler, request: dict[str, Any]) -> dict[str, Any]:
        query = request.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _BadRequest("'query' must be a non-empty string")
        if self._queries is None:
            with self._lock:
                return read_only_query(self._sql_client, query).to_json()
        return self._queries.run(query, abandoned=lambda: client_gone(handler.connection)).to_json()

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        route: tuple[str, str],
        compute: Callable[[], dict[str, Any]],
    ) -> None:
        try:
            reply = compute()
        except (QueryCancelledError, RetryableError, ConnectionError, TimeoutError) as exc:
            self._reply(handler, 503, {"error": str(exc)})
        except (_BadRequest, QueryBudgetError, ValueError) as exc:
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
        if route == ("GET", "/api/v1/status"):
            return {"pid": os.getpid(), **self._status()}
        if route == ("POST", "/api/v1/anomalies"):
            try:
                selection = AnomalyFilter.from_json(request)
            except (TypeError, ValueError) as exc:
                raise _BadRequest(str(exc)) from exc
            return list_anomalies(self._client, selection).to_json()
        if route == ("POST", "/api/v1/spool/requeue") and self._requeue is not None:
            names = request.get("names")
            if (
                not isinstance(names, list)
                or not names
                or not all(isinstance(n, str) for n in names)
            ):
                raise _BadRequest("'names' must be a non-empty list of dead-letter names")
            return {"calls": self._requeue(names)}
        raise LookupError(route)

    def _load_baseline(self, handler: BaseHTTPRequestHandler, query: str) -> dict[str, Any]:
        """Stream the uploaded training set to a temporary file, then load it as a profile."""
        fields, table = read_upload(handler, query)
        with self._lock:
            if self._before_read is not None:
                self._before_read()
            rows = load_profile(self._client, table, model=fields["model"],
                                version=fields["version"], name=fields["name"],
                                config=self._config)  # fmt: skip
            if self._on_baseline is not None:
                self._on_baseline()
        return {"rows": rows}

    def _report(self, handler: BaseHTTPRequestHandler, query: str) -> None:
        """``GET /report``: the report page of what was acknowledged, or a JSON error.

        Read under the API's lock on the analysts' budget (``api.max_*``; the time is
        for all of the page's reads), drawn after the lock is released."""
        try:
            request = ReportRequest.from_query_string(query)
        except ValueError as exc:  # named in the message
            self._reply(handler, 400, {"error": str(exc)})
            return
        config = self._config
        api = config.api if config is not None else ApiConfig()
        try:
            if self._before_read is not None:
                self._before_read()
            page = build_report_page(
                client_query(
                    self._client,
                    ReadBudget(api.max_execution_time, api.max_memory_mib, api.max_result_rows),
                ),
                request,
                detectors=self._detectors,
                labels=labels_parameter(config) if config is not None else "",
                store=redact_dsn(config.storage.dsn) if config is not None else "",
                lock=self._lock,
            )
        except PlotlyMissingError as exc:
            self._reply(handler, 501, {"error": str(exc)})
        except (UnknownModelError, ReportBudgetError) as exc:
            self._reply(handler, 400, {"error": str(exc)})
        except (RetryableError, ConnectionError, TimeoutError) as exc:
            self._reply(handler, 503, {"error": str(exc)})
        except Exception as exc:  # the store's trouble among them: the API must answer
            _logger.exception("report failed")
            self._reply(handler, 500, {"error": str(exc)})
        else:
            self._send(handler, 200, page.encode(), "text/html; charset=utf-8")

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
        headers: Mapping[str, str] | None = None,
    ) -> None:
        cls._send(handler, code, json.dumps(payload).encode(), "application/json", headers)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        code: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
