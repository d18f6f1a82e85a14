"""The ``segwatch`` command's exit codes, one place for every command."""

from __future__ import annotations

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SPOOLED",
    "EXIT_USAGE",
]

EXIT_OK = 0
"""The command did what it was asked."""
EXIT_FAILED = 1
"""The command failed: the store unreachable or missing, a query refused or past its budget."""
EXIT_USAGE = 2
"""Bad usage (argparse's own code) or a bad config file."""
EXIT_SPOOLED = 75
"""``segwatch collector`` stopped with acknowledged calls still in the spool (sysexits'
EX_TEMPFAIL): the store did not take them; the next start flushes them."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT) during a command other than ``segwatch collector``, as shells report it."""
EXIT_BROKEN_PIPE = 141
"""The reader of stdout went away (``segwatch anomalies | head -1``): 128 + SIGPIPE, as a
shell reports a command that SIGPIPE ended; nothing is printed."""
