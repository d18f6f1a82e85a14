"""A spool filling up flushes at once, rather than waiting out a long flush interval.

With a large ``flush_calls`` and a long ``flush_interval`` (settings for a heavy
stream), light traffic of large requests could fill the spool before either
triggered a flush; the receiver would then refuse requests for up to the
interval while the store was healthy. A real collector subprocess with a 16 MiB
spool, a 60 s interval and a million calls per flush takes 10 MiB of batch spans:
it must flush below half the spool well before the interval is up.
"""

from __future__ import annotations

import re
from pathlib import Path

from collector_process import CollectorProcess
from test_exactly_once import COUNTS, ROWS, _config, _send_batches
from waiting import wait_until


def _spool_bytes(collector: CollectorProcess) -> float:
    found = re.search(r"^segwatch_spool_bytes (\S+)$", collector.metrics(), re.MULTILINE)
    assert found is not None
    return float(found.group(1))


def test_a_spool_over_half_full_is_flushed_before_the_interval(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = _config(tmp_path, store, max_mib=16, flush_interval=60, flush_calls=1_000_000,
                     max_pending_calls=2_000_000)  # fmt: skip
    collector = CollectorProcess(config, store)
    try:
        spans = 64  # of ~160 KB each: over half of the 16 MiB spool
        _send_batches(collector.otlp, "fraud", spans=spans)
        # Flushed down below half the spool long before the 60 s interval (the rest waits
        # for its interval, as usual).
        wait_until(lambda: _spool_bytes(collector) < 8 << 20, timeout=30)
        assert collector.sql(COUNTS.format(model="fraud")) == [[spans * ROWS, spans * ROWS]]
    finally:
        assert collector.stop() == 0
