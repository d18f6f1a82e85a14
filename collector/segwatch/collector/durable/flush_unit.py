"""Pending batches and the flush units the call buffer joins them into.

Each :meth:`.call_buffer.CallBuffer.add` queues one :class:`PendingBatch`
(so does :func:`read_spilled`, for calls that were spilled to the spool and
are read back). At a flush the buffer takes a prefix of them and :func:`flush_unit` joins it
into one batch with the deduplication token that names its spool range (from
the end of its first record to the end of its last). From then on the flush
is a *unit*: once its insert may have landed it is retried, and replayed
after a crash, exactly as it was, records and token, and flushed alone.
A requeued dead letter is a unit from the start, under its original token.

Plain data: the call buffer's lock guards the pending ones; a unit being
written, and the reading back, belong to the flusher thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from segwatch.collector.model_calls import ModelCallBatch

from .spool import Position, Record, Spool, record_bytes

__all__ = ["PendingBatch", "Reload", "flush_unit", "read_spilled", "unique_token"]

Reload = Callable[[Record], "tuple[ModelCallBatch, str | None] | None"]
"""Decodes a spool record back into its calls, and the token it must be flushed under
when it is a unit of its own (a requeued dead letter); None if unreadable."""

_logger = logging.getLogger(__name__)


@dataclass
class PendingBatch:
    """Decoded calls waiting in the call buffer: one added batch, or a unit flushed alone."""

    batch: ModelCallBatch
    end: Position | None  # where its spool record ends; None without a spool
    size: int  # spool bytes
    waiters: list[Future[None]]  # without a spool: resolved once stored
    arrived: float  # monotonic time it was added: the flush interval counts from the oldest
    # A unit (a flush that may have landed, or a requeued dead letter) is flushed alone
    # under this token: its spool records from ``first`` (the end of its first) to ``end``.
    token: str | None = None
    first: Position | None = None
    adds: int = 1  # add() calls it stands for (flush() counts them)
    refusals: int = 0  # failed flushes that were not the store's fault


def flush_unit(taken: list[PendingBatch], spool: Spool | None) -> PendingBatch:
    """The flush of ``taken`` as one unit, with the token that names it from now on."""
    if len(taken) == 1 and (taken[0].token is not None or spool is None):
        return taken[0]
    first, last = taken[0].first or taken[0].end, taken[-1].end
    if spool is not None and first is not None and last is not None:
        token = spool.token(first, last)
    else:  # unique: without any token ClickHouse would drop a flush that looks like another
        token = unique_token()
    return PendingBatch(
        ModelCallBatch.concat([pending.batch for pending in taken]),
        last,
        sum(pending.size for pending in taken),
        [waiter for pending in taken for waiter in pending.waiters],
        taken[0].arrived,
        token,
        first,
        adds=sum(pending.adds for pending in taken),
    )


def unique_token() -> str:
    """A deduplication token no other flush has (for calls that are in no spool)."""
    return f"segwatch-{uuid.uuid4().hex}"


def read_spilled(
    spool: Spool, reload: Reload, after: Position, upto: Position, room: int
) -> tuple[list[PendingBatch], int, Position]:
    """Spilled records after ``after`` up to ``upto`` read back, in order, until ``room``
    calls are read: the pending batches, their calls, and where the last one ends.

    On a disk error it logs, waits a second and returns what it read (the
    caller tries again from there).
    """
    pending: list[PendingBatch] = []
    calls = 0
    last = after
    try:
        for record in spool.read(after, upto):
            last = record.end
            # An unreadable record (logged by reload) still takes its place in the order,
            # with no calls: its flush releases its spool bytes like any other.
            batch, token = reload(record) or (ModelCallBatch(), None)
            size = record_bytes(record.payload)
            pending.append(
                PendingBatch(batch, record.end, size, [], time.monotonic(), token, record.end)
            )
            calls += len(batch)
            if calls >= room:
                break
    except OSError:  # the disk failed under the spool: keep what was read, try again soon
        _logger.exception("reading spilled calls back from the spool failed")
        time.sleep(1.0)
    return pending, calls, last
