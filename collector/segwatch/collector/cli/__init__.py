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

- ``main``: ``main()``: parse, set up logging, run the command, map errors to exit codes.
- ``parser``: what the command line accepts (every help text), one function per command.
- ``commands``: what each command does, one handler each, dispatched by name.
- ``collector_process``: ``segwatch collector``: the process, its signals, its 30 s bound.
- ``exits``: the exit codes.
- ``access``: how a command reaches the store (directly or through the collector's API).
- ``output``: tables and JSON for query results; the progress bar.
- ``demo``, ``explain``: ``segwatch demo``, ``segwatch explain``.
"""

from .main import main

__all__ = ["main"]
