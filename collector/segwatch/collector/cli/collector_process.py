"""``segwatch collector`` and ``segwatch serve``: a service as this process, until SIGINT or
SIGTERM.

Threads: the main thread starts the
:class:`~segwatch.collector.service.collector.Collector` (or the
:class:`~segwatch.collector.service.serving.StoreServer`) and waits for a
signal; the first signal starts a watchdog timer, so the process ends within
:data:`SHUTDOWN_SECONDS` whatever a long replay, a silent store or a query does.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import NoReturn

from segwatch.collector.config.collector_config import CollectorConfig

from .exits import EXIT_OK, EXIT_SPOOLED

__all__ = ["SHUTDOWN_SECONDS", "run_collector", "run_server", "stop_on_signal", "wait_for_signal"]

SHUTDOWN_SECONDS = 30.0
"""SIGTERM ends the collector within this time, whatever the store or a query does."""


def run_collector(config: CollectorConfig) -> int:
    """Run until a signal; 0 if every acknowledged call is stored, else :data:`.exits.EXIT_SPOOLED`
    (the rest waits in the spool for the next start)."""
    from segwatch.collector.service.collector import Collector

    collector = Collector(config)
    stop = stop_on_signal()
    collector.start()
    wait_for_signal(stop)
    return EXIT_SPOOLED if collector.shutdown() else EXIT_OK


def run_server(config: CollectorConfig) -> int:
    """Serve the config's embedded store over ClickHouse's HTTP interface until a signal."""
    from segwatch.collector.service.serving import StoreServer

    server = StoreServer(config)
    stop = stop_on_signal()
    server.start()
    wait_for_signal(stop)
    server.stop()
    return EXIT_OK


def wait_for_signal(stop: threading.Event) -> None:
    """Wait until ``stop`` is set, waking every :data:`SIGNAL_CHECK_SECONDS`.

    A signal the kernel hands to another thread (the engine's and gRPC's threads do
    not block SIGTERM) only marks the handler pending: Python runs it on the main
    thread, which an untimed wait would never wake to do. Each timed wait that
    returns lets a pending handler run.
    """
    while not stop.wait(SIGNAL_CHECK_SECONDS):
        pass


SIGNAL_CHECK_SECONDS = 0.5
"""How often the main thread wakes to run a signal handler another thread's signal left
pending."""


def stop_on_signal() -> threading.Event:
    """An event SIGINT or SIGTERM sets; the first also arms the watchdog."""
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        if not stop.is_set():
            stop.set()
            # The bound, whatever the process is doing: a long replay at start, a store
            # that does not answer, a query that will not end.
            watchdog = threading.Timer(SHUTDOWN_SECONDS, _give_up, (SHUTDOWN_SECONDS,))
            watchdog.daemon = True
            watchdog.start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    return stop


def _give_up(seconds: float) -> NoReturn:
    """End the process now: what was acknowledged and not stored is safe in the spool."""
    logging.getLogger(__name__).error(
        "the process did not stop within %.0f s: exiting; a collector's acknowledged calls "
        "not yet stored stay in the spool for the next start",
        seconds,
    )
    logging.shutdown()
    os._exit(EXIT_SPOOLED)
