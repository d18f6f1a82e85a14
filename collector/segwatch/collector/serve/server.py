"""ClickHouseDoor: ClickHouse's HTTP interface, served over the embedded store.

What real clients use (clickhouse-connect, curl, Grafana's and BI tools'
ClickHouse drivers): ``GET``/``POST /`` with the query in ``query=`` or the
body, insert data after ``INSERT ... FORMAT <name>`` (any format the engine
reads, compressed or not), every output format the engine writes, sessions,
settings and ``param_*`` query parameters in the URL, the ``X-ClickHouse-*``
headers, ``/ping`` and ``/replicas_status``, and errors as ClickHouse sends
them. Everything runs in the real engine; the door only reads HTTP, checks who
asks, and hands the statement over.

Threads: one per connection (keep-alive: a client's requests follow each
other on it; an answer given before its request's body was read says
``Connection: close``); each query runs on a worker thread while the
connection's thread watches whether the client is still there, and kills the
query if not.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

from segwatch.collector.config.endpoints import is_wildcard, parse_endpoint
from segwatch.collector.config.serve import ServeConfig

from .engine import Engine, EngineHandle, Outcome, Sessions
from .errors import ServeError
from .guard import READING_METHODS, check_setting_values, check_statement, reaching_names
from .listener import Listener, client_gone, handler_class, tls_context
from .request import BodyStream, ClickHouseRequest, encode_response, parse_request
from .statement import HEAD_BYTES, Statement, read_statement
from .users import Account, Accounts

__all__ = ["SLOT_WAIT", "ClickHouseDoor"]

_logger = logging.getLogger(__name__)
SLOT_WAIT = 10.0
"""Seconds a query waits for one of its user's slots (``max_concurrent_queries``) before
TOO_MANY_SIMULTANEOUS_QUERIES."""
_MAX_SQL = 64 << 20  # bytes of SQL (an INSERT ... VALUES) read into memory at most
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Parquet": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream",
}


class ClickHouseDoor:
    """The HTTP door on the store at ``store_path`` (None: the process's in-memory engine).

    ``start()`` returns once the port is bound; ``shutdown()`` cancels what runs.
    ``slot_wait``: seconds a query waits for a slot of its user (:data:`SLOT_WAIT`).
    """

    def __init__(
        self, config: ServeConfig, store_path: str | None, *, slot_wait: float = SLOT_WAIT
    ) -> None:
        self._config = config
        self._accounts = Accounts(config.effective_users)  # raises if a password is unset
        self._store_path = store_path
        self._slot_wait = slot_wait
        self.engine: Engine | None = None
        self._sessions: Sessions | None = None
        self._reaching: frozenset[str] = frozenset()
        self._server: Listener | None = None
        self._thread: threading.Thread | None = None
        self._display_name = socket.gethostname()
        self._temp_dir = os.path.join(store_path, "tmp-serve") if store_path else None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the door."""
        assert self._server is not None
        host = str(self._server.server_address[0])
        if is_wildcard(host):
            host = "::1" if ":" in host else "127.0.0.1"
        scheme = "https" if self._config.tls.enabled else "http"
        return (
            f"{scheme}://[{host}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"
        )

    def start(self) -> None:
        self.engine = Engine(self._store_path)
        self._sessions = Sessions(self.engine)
        self._reaching = reaching_names(self.engine.known_names())
        if self._temp_dir:
            os.makedirs(self._temp_dir, exist_ok=True)
        host, port = parse_endpoint(self._config.endpoint)
        try:
            self._server = Listener(
                (host, port), handler_class(self.serve), tls_context(self._config.tls)
            )
        except OSError as exc:  # the port taken (8123 is ClickHouse's own), or no such address
            reason = exc.strerror or str(exc)
            raise OSError(f"serve.http.endpoint {self._config.endpoint}: {reason}") from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="segwatch-serve", daemon=True
        )
        self._thread.start()
        _logger.debug("ClickHouse HTTP interface on %s", self.url)

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.kill_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._sessions is not None:
            self._sessions.close()
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # -- one request

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.partition("?")[0]
        query_id = str(uuid.uuid4())
        body: BodyStream | None = None
        try:
            body = BodyStream(handler.rfile, handler.headers)  # type: ignore[arg-type]
            if path in ("/ping", "/replicas_status"):
                body.drain()
                self._send(handler, 200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            if path != "/":
                raise ServeError(
                    "UNKNOWN_TYPE_OF_QUERY", f"There is no handle {path}: use / or /ping"
                )
            if handler.command == "POST" and body.length_unknown:
                raise ServeError(
                    "HTTP_LENGTH_REQUIRED",
                    "The Transfer-Encoding is not chunked and there is no Content-Length "
                    "header for POST request",
                )
            if body.consumed and "query=" not in handler.path.partition("?")[2]:
                self._send(handler, 200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return  # nothing asked: the health answer, as ClickHouse gives it
            request = parse_request(handler.command, handler.path, handler.headers, body,
                                    self._authenticate)  # fmt: skip
            query_id = request.query_id or query_id
            if not request.query and (body.consumed or request.form_body):
                self._send(handler, 200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            account = self._authenticate(request)
            self._answer(handler, request, body, account, query_id)
        except ServeError as error:
            self._refuse(handler, error, query_id, body)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            handler.close_connection = True
        except Exception as exc:  # the door answers, whatever went wrong
            _logger.exception("serving a request failed")
            self._refuse(handler, ServeError("STD_EXCEPTION", str(exc)), query_id, body)
        finally:
            if body is None or not body.consumed:
                handler.close_connection = True  # the rest of its body would read as a request

    def _authenticate(self, request: ClickHouseRequest) -> Account:
        return self._accounts.authenticate(request.user, request.password)

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        request: ClickHouseRequest,
        body: BodyStream,
        account: Account,
        query_id: str,
    ) -> None:
        if not account.slots.acquire(timeout=self._slot_wait):
            raise ServeError(
                "TOO_MANY_SIMULTANEOUS_QUERIES",
                f"Too many simultaneous queries for user {account.name}: "
                f"{account.user.max_concurrent_queries} run (serve.users.{account.name}."
                "max_concurrent_queries)",
            )
        try:
            statement, outcome = self._run(handler, request, body, account)
        finally:
            account.slots.release()
        output_format = statement.output_format or request.default_format or "TabSeparated"
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": _summary(outcome),
            "Content-Type": _CONTENT_TYPES.get(output_format, "text/plain; charset=UTF-8"),
        }
        if statement.answers_rows:
            headers["X-ClickHouse-Format"] = output_format
        data = outcome.data
        if request.compress_response:
            data = encode_response(data, request.compress_response)
            headers["Content-Encoding"] = request.compress_response
        self._send(handler, 200, data, headers)

    def _run(
        self,
        handler: BaseHTTPRequestHandler,
        request: ClickHouseRequest,
        body: BodyStream,
        account: Account,
    ) -> tuple[Statement, Outcome]:
        pieces = iter(()) if request.form_body else iter(body)
        head, complete = _head(request, pieces)
        statement = read_statement(head, complete)
        if statement.needs_all:
            if account.user.readonly:  # before reading it all: a reader inserts nothing
                raise ServeError("READONLY", f"{account.name}: Cannot execute query in "
                                 "readonly mode")  # fmt: skip
            head = head + _rest(pieces, _MAX_SQL - len(head))
            statement = read_statement(head, True)
        check_statement(statement, account, request.method, self._reaching, request.parameters)
        check_setting_values(request.settings, self._reaching)
        fresh = not request.session_id or "readonly" in request.settings
        settings = _settings(request, account, fresh)
        if statement.data_offset is None:
            return statement, self._execute(
                handler, request, account, statement.sql, settings, fresh
            )
        with tempfile.NamedTemporaryFile(prefix="insert-", dir=self._temp_dir) as data:
            data.write(head[statement.data_offset :])
            for piece in pieces:
                data.write(piece)
            data.flush()
            sql = _insert_from_file(statement, data.name)
            return statement, self._execute(handler, request, account, sql, settings, fresh)

    def _execute(
        self,
        handler: BaseHTTPRequestHandler,
        request: ClickHouseRequest,
        account: Account,
        sql: str,
        settings: dict[str, str],
        fresh: bool,
    ) -> Outcome:
        assert self.engine is not None and self._sessions is not None
        output_format = request.default_format or "TabSeparated"
        abandoned = lambda: client_gone(handler.connection)  # noqa: E731
        if fresh:
            handle = self.engine.open(account)
            try:
                with handle.lock:
                    _apply(handle, request.database, settings)
                    return self.engine.execute(
                        handle, sql, output_format, request.parameters, abandoned
                    )
            finally:
                handle.close()
        with self._sessions.hold(account, request.session_id, request.session_timeout,
                                 request.session_check) as handle:  # fmt: skip
            names = list(settings)
            snapshot = handle.snapshot(names) if names else {}
            try:
                _apply(handle, request.database, settings)
                return self.engine.execute(
                    handle, sql, output_format, request.parameters, abandoned
                )
            finally:
                if names:
                    handle.restore(snapshot, names)

    # -- answers

    def _refuse(
        self,
        handler: BaseHTTPRequestHandler,
        error: ServeError,
        query_id: str,
        body: BodyStream | None,
    ) -> None:
        version = self.engine.version if self.engine is not None else "unknown"
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(error.code),
            "X-ClickHouse-Query-Id": query_id,
        }
        if body is None or not body.consumed:
            # The rest of the body would read as the next request: the client must know
            # this connection ends here, or it sends its next request into a closed one.
            headers["Connection"] = "close"
        try:
            self._send(handler, error.status, error.body(version), headers)
        except (ConnectionError, ssl.SSLError):
            handler.close_connection = True

    def _send(
        self, handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]
    ) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if self.engine is not None:
            handler.send_header("X-ClickHouse-Timezone", self.engine.timezone)
        handler.send_header("X-ClickHouse-Server-Display-Name", self._display_name)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)


def _head(request: ClickHouseRequest, pieces: Iterator[bytes]) -> tuple[bytes, bool]:
    """The stream's first :data:`HEAD_BYTES` or more (the query parameter, a line feed, the
    body), and whether that is all of it."""
    head = bytearray(request.query.encode() + b"\n" if request.query else b"")
    while len(head) < HEAD_BYTES:
        piece = next(pieces, None)
        if piece is None:
            return bytes(head), True
        head += piece
    return bytes(head), False


def _rest(pieces: Iterator[bytes], limit: int) -> bytes:
    rest = bytearray()
    for piece in pieces:
        rest += piece
        if len(rest) > limit:
            raise ServeError("QUERY_IS_TOO_LARGE", f"the query is longer than {_MAX_SQL} bytes")
    return bytes(rest)


def _insert_from_file(statement: Statement, path: str) -> str:
    """The INSERT reading its data from ``path``: ``FROM INFILE`` goes before its SETTINGS."""
    quoted = "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"
    at = statement.settings_at if statement.settings_at is not None else len(statement.sql)
    head, tail = statement.sql[:at], statement.sql[at:]
    return f"{head} FROM INFILE {quoted} {tail} FORMAT {statement.input_format}"


def _settings(request: ClickHouseRequest, account: Account, fresh: bool) -> dict[str, str]:
    """The request's settings, checked against the user's budget; GET implies readonly."""
    settings = dict(request.settings)
    for name, value in settings.items():
        account.check_setting(name, value)
    reading = request.method in READING_METHODS and fresh and not account.user.readonly
    if reading and settings.get("readonly", "0") in ("", "0"):  # a GET reads, whatever it asks
        settings["readonly"] = "2"  # ClickHouse's for GET: reads, may change settings
    if "readonly" in settings:
        settings["readonly"] = settings.pop("readonly")  # last: it may stop later SETs
    return settings


def _apply(handle: EngineHandle, database: str, settings: dict[str, str]) -> None:
    """``USE database`` and each setting; on a reader's handle the engine refuses every
    change with its own message (and lets a setting be set to the value it has)."""
    handle.use(database)
    for name, value in settings.items():
        handle.set(name, value)


def _summary(outcome: Outcome) -> str:
    return json.dumps({
        "read_rows": str(outcome.rows_read),
        "read_bytes": str(outcome.bytes_read),
        "written_rows": str(outcome.rows_written),
        "written_bytes": str(outcome.bytes_written),
        "total_rows_to_read": str(outcome.rows_read),
        "result_rows": "0",
        "result_bytes": str(len(outcome.data)),
        "elapsed_ns": str(outcome.elapsed_ns),
    }, separators=(",", ":"))  # fmt: skip
