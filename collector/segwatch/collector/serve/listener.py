"""The listening side of the door: one thread per connection, TLS, a client gone.

:class:`Listener` accepts connections (IPv4 or IPv6, TLS when configured; the
handshake happens on the connection's own thread, so a slow or broken client
holds up no one). :func:`handler_class` makes the HTTP/1.1 keep-alive handler
that hands each request to the door; a connection that fails its handshake
(plain HTTP to the TLS port, say) is closed quietly, as ClickHouse closes it.
:func:`client_gone` tells a running query's thread that its client left.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from segwatch.collector.config.network import TlsConfig

__all__ = ["Listener", "client_gone", "handler_class", "tls_context"]

_logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024
"""Connections the door keeps open at once (each has a thread)."""


class Listener(ThreadingHTTPServer):
    """The door's socket, at ``address``, with ``tls`` (None: plain HTTP)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, tls: ssl.SSLContext | None) -> None:
        self._tls = tls
        # One thread per connection: past MAX_CONNECTIONS a new one is closed at once
        # (ClickHouse's max_connections), so idle keep-alives cannot pile up threads.
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connections.acquire(blocking=False):
            _logger.warning("%d connections are open: closing a new one", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        # An answer leaves as headers, then body: without NODELAY the body waits for the
        # client's delayed ACK of the headers (40 ms on Linux) on every request.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:  # the handshake happens on the connection's own thread
            connection = self._tls.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address


def tls_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The server's TLS context (with a client CA: clients must present a certificate)."""
    if not tls.enabled:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        context.load_verify_locations(tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def handler_class(serve: Callable[[BaseHTTPRequestHandler], None]) -> type[BaseHTTPRequestHandler]:
    """A handler that passes every GET, POST and HEAD to ``serve``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as ClickHouse clients expect
        timeout = 300  # seconds an idle connection (or a stalled handshake) is kept

        def setup(self) -> None:
            super().setup()
            self.handshake_failed = False
            if isinstance(self.connection, ssl.SSLSocket):
                try:
                    self.connection.do_handshake()
                except (ssl.SSLError, OSError) as exc:
                    _logger.debug("serve: TLS handshake failed (%s): %s", self.client_address, exc)
                    self.handshake_failed = True

        def handle(self) -> None:
            if not self.handshake_failed:
                super().handle()

        def do_GET(self) -> None:
            serve(self)

        def do_POST(self) -> None:
            serve(self)

        def do_HEAD(self) -> None:
            serve(self)

        def log_message(self, format: str, *args: Any) -> None:
            _logger.debug("serve: " + format, *args)

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except (ConnectionError, ssl.SSLError, TimeoutError):
                self.close_connection = True

    return Handler


def client_gone(connection: socket.socket) -> bool:
    """Whether the client closed its connection (its request is read: anything readable
    now is the end of the stream, or for TLS the ``close_notify`` before it)."""
    try:
        if not _readable_now(connection):
            return False
        if isinstance(connection, ssl.SSLSocket):
            return _tls_client_gone(connection)
        return connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _readable_now(connection: socket.socket) -> bool:
    """Whether reading would not block. poll, not select: a long-running process holds
    descriptors past select's 1024, which select refuses (and that read as "gone")."""
    poller = select.poll()
    poller.register(connection, select.POLLIN | select.POLLPRI | select.POLLHUP)
    return bool(poller.poll(0))


def _tls_client_gone(connection: ssl.SSLSocket) -> bool:
    """Below TLS, the end of the stream reads as b""; a TLS client that says goodbye sends
    ``close_notify`` first (curl, Go and Java clients do), which only TLS can read. Reading
    it through TLS would consume a pipelined request's first byte, were there one: the
    ClickHouse clients wait for each answer before their next request."""
    with socket.socket(fileno=os.dup(connection.fileno())) as raw:
        if raw.recv(1, socket.MSG_PEEK) == b"":
            return True
    timeout = connection.gettimeout()
    connection.settimeout(0)
    try:
        return connection.recv(1) == b""  # close_notify (ragged EOFs suppressed) reads as b""
    except ssl.SSLWantReadError:
        return False  # part of a record: not yet a goodbye
    except ssl.SSLZeroReturnError:
        return True
    finally:
        connection.settimeout(timeout)
