"""The ``segwatch`` command line: parse, set up logging, run one command, map errors.

Exit codes (:mod:`.exits`): 0 success, 1 the command failed (store
unreachable, query error), 2 bad usage or bad configuration, 75 ``segwatch
collector`` stopped with acknowledged calls left in the spool, 141 stdout's
reader went away (``| head``), quietly. Errors are one
line on stderr. A command that reads or writes a store first says which one,
on a stderr line of its own (``segwatch: store chdb:///srv/segwatch-data
(through the collector at ...)``).

The config file: ``--config``, else ``$SEGWATCH_CONFIG``, else
``./segwatch.yaml`` if it exists, else none (:mod:`segwatch.collector.config.files`).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import re
import sys
from collections.abc import Sequence

from clickhouse_connect.driver.exceptions import ClickHouseError

from segwatch.clickhouse.store import StoreError
from segwatch.collector.config.load import ConfigError
from segwatch.collector.service.logs import JsonLogFormatter

from .access import ApiError
from .commands import HANDLERS
from .exits import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from .parser import build_parser, check_usage

__all__ = ["main"]

# The embedded engine's allocator (the jemalloc inside chdb) keeps freed pages
# for seconds; handing them back after one second kept the collector's peak RSS
# lower under load (bench/ingest.py) at no measured cost. It is read when chdb
# loads, so it is set before any store is opened; a value set wins.
EMBEDDED_ALLOCATOR = ("JE_MALLOC_CONF", "dirty_decay_ms:1000,muzzy_decay_ms:0")

MALLOC_ARENAS = 2
"""The C allocator's arenas (glibc's ``M_ARENA_MAX``) every thread's ``malloc`` shares.

glibc gives threads arenas of their own, up to eight per core; each keeps the
memory its thread freed. The collector's threads (gRPC's, the flusher's, the
engine's) take turns at Python work, so more arenas only held more freed
memory: two kept its RSS peak under load 10–20 MiB lower at the same CPU
(``bench/ingest.py``). ``$MALLOC_ARENA_MAX``, which glibc reads at start, wins.
"""
_M_ARENA_MAX = -8  # mallopt's parameter, from glibc's malloc.h


def bound_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's arenas for the threads to come; False where there is no glibc (musl,
    macOS) or ``$MALLOC_ARENA_MAX`` says otherwise."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault(*EMBEDDED_ALLOCATOR)
    bound_malloc_arenas()
    parser = build_parser()
    args = parser.parse_args(argv)
    check_usage(parser, args)
    _configure_logging(args)
    try:
        code = HANDLERS[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except BrokenPipeError:
        return _reader_gone()
    except ConfigError as exc:
        print(f"segwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, ApiError, ClickHouseError, OSError, ValueError) as exc:
        print(f"segwatch: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _configure_logging(args: argparse.Namespace) -> None:
    """Text or JSON lines on stderr: INFO for collector and serve, warnings for the rest."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter()
        if args.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    if args.verbose:
        level = logging.DEBUG
    else:
        level = logging.INFO if args.command in ("collector", "serve") else logging.WARNING
    logging.basicConfig(level=level, handlers=[handler])
    if not args.verbose:
        # The one-line error says what failed; the drivers' retry chatter does not help.
        for noisy in ("urllib3", "clickhouse_connect"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def _reader_gone() -> int:
    """stdout's reader closed the pipe (``| head``): stop quietly, as a command SIGPIPE ends.

    The Python documentation's recipe (``signal`` module, "Note on SIGPIPE"): point
    stdout at /dev/null, so that the interpreter's own flush at exit does not fail
    again and print "Exception ignored".
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # The embedded engine's client sends settings as a SETTINGS clause, which the engine
    # then quotes back as if the user had written it ("In scope SELECT ... SETTINGS
    # readonly = '1'"): the user's query is what they wrote.
    return _READ_ONLY_CLAUSE.sub("", text[0]) if text else type(exc).__name__


_READ_ONLY_CLAUSE = re.compile(r" SETTINGS readonly = '1'")
