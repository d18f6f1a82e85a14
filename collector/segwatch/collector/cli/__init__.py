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
- ``parser``: what the command line accepts (every help text), one function per command;
  ``argument_types``: what each argument accepts (argparse type functions).
- ``commands``: what each command does, one handler each, dispatched by name.
- ``collector_process``: ``segwatch collector``: the process, its signals, its 30 s bound.
- ``exits``: the exit codes.
- ``access``: how a command reaches the store (directly or through the collector's API).
- ``output``: tables and JSON for query results; the progress bar.
- ``demo``, ``explain``: ``segwatch demo``, ``segwatch explain``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

try:
    from .main import main
except ModuleNotFoundError as missing:  # a base install: the instrumentation only
    if (missing.name or "").startswith("segwatch"):
        raise
    _MISSING = missing.name

    def main(argv: Sequence[str] | None = None) -> int:
        """The command without the collector's dependencies: ``--version``; ``--help`` saying
        what to install; else that in one line, and 1."""
        from importlib.metadata import version

        arguments = list(sys.argv[1:] if argv is None else argv)
        if arguments == ["--version"]:
            print(f"segwatch {version('segwatch')}")
            return 0
        missing = (
            f"{_MISSING} is not installed: the segwatch command needs the collector's "
            "dependencies (pip install 'segwatch[collector]')"
        )
        if "--help" in arguments or "-h" in arguments:
            print(f"usage: segwatch [--version] <command> ...\n\n{missing}; this install has "
                  "the instrumentation (segwatch.instrumentation) and --version.")  # fmt: skip
            return 0
        print(f"segwatch: {missing}", file=sys.stderr)
        return 1


__all__ = ["main"]
