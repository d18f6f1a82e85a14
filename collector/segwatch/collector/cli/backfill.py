"""``segwatch backfill`` and ``segwatch detect --from/--to``: history in, and replayed.

Both write to the store as a collector would, so both need the store itself:
directly (an embedded store no one holds, a server, or an embedded store
``segwatch serve`` holds, through its door). While a collector holds the
embedded store, its local API is the only way in, and it takes neither a file
of a month of calls nor a month of detector runs in one request: the commands
refuse, naming the collector, and the user stops it first (its own windows
keep running as it restarts; a replay of the same range later adds nothing).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import types

from segwatch.clickhouse.store import StoreLockedError
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.storage import FOREVER
from segwatch.collector.profile.backfill import (
    BackfillResult,
    Progress,
    backfill_file,
    keep_freed_memory,
)
from segwatch.collector.service.detect import RangeResult, detect_range

from .access import DirectAccess, StoreAccess
from .output import print_table

__all__ = ["is_the_program", "print_backfill", "run_backfill", "run_detect_range"]

RAW_CALLS_TTL = 30 * 86400
"""How long ``ml_model_calls`` keeps a call when the config leaves its retention alone."""


def _direct(access: StoreAccess, command: str) -> DirectAccess:
    """The store opened here, or :class:`StoreLockedError` when a collector holds it."""
    if not isinstance(access, DirectAccess):
        raise StoreLockedError(
            f"{access.store}: a running collector holds this embedded store, and segwatch "
            f"{command} writes to it directly: stop the collector, run the command, start the "
            "collector again (or reach the store through segwatch serve or a ClickHouse server)"
        )
    return access


def run_backfill(
    access: StoreAccess,
    path: str,
    *,
    model: str,
    timestamp: str,
    version: str,
    stage: str,
    config: CollectorConfig,
    progress: Progress | None = None,
) -> BackfillResult:
    """Backfill ``path`` into the store ``access`` reaches (see ``profile.backfill``).

    When this process is the ``segwatch`` program itself (:func:`is_the_program`), which
    ends after the command, malloc keeps freed memory for the next chunk
    (:func:`keep_freed_memory`, process-wide); called as a function (a test, a script that
    goes on), the process's malloc is left as it was."""
    client = _direct(access, "backfill").client
    if is_the_program():
        keep_freed_memory()
    return backfill_file(client, path, model=model, timestamp=timestamp, version=version,
                         stage=stage, config=config, progress=progress)  # fmt: skip


def is_the_program(main_module: types.ModuleType | None = None) -> bool:
    """Whether this process runs the ``segwatch`` program: its ``__main__`` (or
    ``main_module``) is the console script or ``python -m segwatch.collector.cli``, both of
    which call ``segwatch.collector.cli.main`` and exit with its code."""
    # Looked up, not imported: cli.main imports the commands, which import this module.
    ours = getattr(sys.modules.get("segwatch.collector.cli.main"), "main", None)
    module = main_module if main_module is not None else sys.modules.get("__main__")
    return ours is not None and getattr(module, "main", None) is ours


def print_backfill(
    result: BackfillResult, path: str, model: str, config: CollectorConfig, as_json: bool
) -> None:
    """What was written, and what the store will not keep (raw calls past their retention)."""
    retention = config.storage.retention.raw_calls
    ttl = RAW_CALLS_TTL if retention is None else retention
    oldest_kept = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=ttl)
    expired = bool(result.raw_calls and ttl != FOREVER and result.first is not None
                   and result.first < oldest_kept)  # fmt: skip
    if as_json:
        print(json.dumps({"file": path, "model": model, **result.to_json(),
                          "raw_calls_expire": expired}))  # fmt: skip
        return
    span = (f" ({result.first:%Y-%m-%d %H:%M:%S} to {result.last:%Y-%m-%d %H:%M:%S} UTC)"
            if result.first and result.last else "")  # fmt: skip
    fields = ", ".join(f"{column} as {quantity}" for column, quantity in result.quantities.items())
    stored = result.already_stored or 0  # None: not counted (not an embedded store)
    new = result.rows - stored
    if not stored:
        print(f"backfilled {result.rows} calls of model {model!r}{span} from {path}")
    elif not new:
        print(f"nothing new: the {result.rows} calls of model {model!r}{span} in {path} were "
              "already stored (backfilled before; each call is stored once)")  # fmt: skip
    else:
        print(f"backfilled {new} calls of model {model!r}{span} from {path}; the other "
              f"{result.already_stored} were already stored (backfilled before)")  # fmt: skip
    print(f"columns read: {fields}")
    if result.ignored:
        print(f"ignored (not fields of model {model!r} in the config; name one feature.<name> "
              f"to keep it): {', '.join(result.ignored)}")  # fmt: skip
    if result.unaggregated or result.unsegmented:
        print(f"limits: {result.unaggregated} fields not aggregated (segments."
              f"max_fields_per_model), {result.unsegmented} dimensions not segmented "
              "(segments.max_per_model)")  # fmt: skip
    if expired:
        print(f"note: ml_model_calls keeps calls {ttl // 86400} days (storage.retention."
              "raw_calls): the older ones are in the aggregates only")  # fmt: skip
    print("next: segwatch detect --from TIME --to TIME replays the detectors over these times")


def run_detect_range(
    access: StoreAccess,
    start: dt.datetime,
    end: dt.datetime,
    as_json: bool,
    progress: Progress | None = None,
) -> None:
    direct = _direct(access, "detect --from")
    with direct.detector_helpers() as helpers:
        result: RangeResult = detect_range(
            direct.client, start, end, direct.specs, progress, helpers
        )
    print_table(result, sys.stdout, as_json)
    if not as_json:  # --json has the totals in its object
        print("\n" + "\n".join(result.summary()))
