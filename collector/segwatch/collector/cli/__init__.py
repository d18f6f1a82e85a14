"""cli: the ``segwatch`` command line (``segwatch.collector.cli:main``).

What enters: argv and, from ``--config`` / ``$SEGWATCH_CONFIG`` /
``./segwatch.yaml``, a config file. What leaves: text for people (aligned
tables) or ``--json`` for programs on stdout, one-line errors on stderr, and
exit codes (0 done, 1 failed, 2 bad usage, 75 acknowledged calls left in the
spool). Commands reach the store through a running collector's local API when
one holds it (an embedded store is locked by one process), else open it
themselves (``access``).

Threads: a command runs on the main thread; ``segwatch collector`` hands its
process to :class:`~segwatch.collector.service.collector.Collector` and waits
for a signal.

- ``main``: the argument parser and the commands.
- ``access``: how a command reaches the store (directly or through the collector's API).
- ``output``: tables and JSON for query results.
- ``demo``, ``explain``: ``segwatch demo``, ``segwatch explain``.
"""

from .main import main

__all__ = ["main"]
