"""Rows of ``ml_late_buckets``: the 5-minute buckets a writer gave minute rows late.

A detector run's roll-up of a bucket stands once the bucket settled, unless a
writer marks the bucket after inserting more of its minute rows (see
:mod:`segwatch.clickhouse.rollups`). The collector marks what a flush inserted
:data:`~segwatch.clickhouse.rollups.LATE_AFTER` seconds or more after its
bucket's end (a store outage's backlog, an SDK's retries); a backfill marks
every bucket each chunk gives calls, once the chunk landed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from segwatch.clickhouse.rollups import FIVE_MINUTES, LATE_AFTER, LATE_BUCKETS

from .rows import TableRows

__all__ = ["LateBucketRows", "late_bucket_rows"]


class LateBucketRows(TableRows):
    """Rows of ``ml_late_buckets``."""

    table = LATE_BUCKETS
    column_names = ("bucket_start", "marked_at")
    column_types = ("DateTime('UTC')", "DateTime64(3, 'UTC')")
    # A backfill of years of history marks buckets in more months (the table's partitions)
    # than an insert may write by default (100).
    insert_settings: ClassVar[dict[str, Any]] = {"max_partitions_per_insert_block": 0}

    def joined(self, other: LateBucketRows) -> LateBucketRows:
        """These marks and ``other``'s, one per bucket: its latest."""
        buckets = np.concatenate([self.columns["bucket_start"], other.columns["bucket_start"]])
        marked = np.concatenate([self.columns["marked_at"], other.columns["marked_at"]])
        order = np.lexsort((marked, buckets))  # by bucket, then by time: the last is the latest
        buckets, marked = buckets[order], marked[order]
        last = np.ones(len(buckets), dtype=bool)  # each bucket's last row
        last[:-1] = buckets[1:] != buckets[:-1]
        rows = LateBucketRows()
        rows.columns["bucket_start"], rows.columns["marked_at"] = buckets[last], marked[last]
        return rows


def late_bucket_rows(
    minutes: npt.NDArray[np.int64] | Iterable[int], now: float, *, every: bool = False
) -> LateBucketRows:
    """The marks for minute rows starting at ``minutes`` (epoch seconds) that landed by
    ``now`` (epoch seconds, after the insert returned): one per 5-minute bucket that
    ended :data:`LATE_AFTER` seconds or more before ``now`` (``every``: one per bucket,
    ended or not: a backfill's rows were never seen by any roll-up)."""
    size = FIVE_MINUTES.seconds
    starts = np.asarray(minutes if isinstance(minutes, np.ndarray) else list(minutes),
                        dtype=np.int64)  # fmt: skip
    buckets = np.unique(starts // size * size)
    if not every:
        buckets = buckets[buckets + size + LATE_AFTER <= now]
    rows = LateBucketRows()
    rows.columns["bucket_start"] = buckets
    rows.columns["marked_at"] = np.full(len(buckets), int(now * 1000), dtype=np.int64)
    return rows
