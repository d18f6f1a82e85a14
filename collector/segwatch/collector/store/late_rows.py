"""Rows of ``ml_late_buckets``: the 5-minute buckets a writer gave minute rows late.

A detector run's roll-up of a bucket stands once the bucket settled, unless a
writer marks the bucket after inserting more of its minute rows (see
:mod:`segwatch.clickhouse.rollups`). The collector marks what a flush inserted
:data:`~segwatch.clickhouse.rollups.LATE_AFTER` seconds or more after its
bucket's end (a store outage's backlog, an SDK's retries); a backfill marks
every bucket of its file.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from segwatch.clickhouse.rollups import FIVE_MINUTES, LATE_AFTER

from .rows import TableRows

__all__ = ["LateBucketRows", "late_bucket_rows"]


class LateBucketRows(TableRows):
    """Rows of ``ml_late_buckets``."""

    table = "ml_late_buckets"
    column_names = ("bucket_start", "marked_at")
    column_types = ("DateTime('UTC')", "DateTime64(3, 'UTC')")


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
