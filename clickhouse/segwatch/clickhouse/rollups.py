"""Rolling ml_segment_aggregates up to 5-minute and 1-hour buckets for the detectors.

A detector run reads its current window from the 5-minute roll-up and its
baseline from the 1-hour one: a few rows per segment and quantity instead of
every minute (a day of 1,000 segments x 30 quantities is 43 million minute
rows). The minute table stays the source of truth; :func:`roll_up` builds the
buckets a run needs that are not rolled up yet, and rolls a bucket up once
more after it settled (``settle`` seconds after its end) if its roll-up was
made before, so calls that arrived late still count (a roll-up replaces the
bucket's earlier rows: ReplacingMergeTree on ``rolled_at``, read with
``FINAL``). Until then the first roll-up serves every detector of a run; a
bucket rolled up after it settled is final and never read from the minute
rows again.

5-minute buckets come from the minute rows, 1-hour buckets from the 5-minute
ones. Only complete buckets (ending before ``end``) are rolled up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from .store import DETECTOR_SETTINGS

__all__ = ["FIVE_MINUTES", "ONE_HOUR", "Rollup", "forget_rollups", "roll_up"]


@dataclass(frozen=True)
class Rollup:
    table: str
    seconds: int
    source: str  # the table its buckets are built from
    final: str  # "FINAL" when the source is itself a roll-up
    exemplars: str  # the aggregate of the source rows' exemplar_trace_ids: five distinct ids


# Exemplars, five distinct trace ids of the bucket's calls. The minute rows are read
# unmerged (a minute has a partial row per flush until the engine merges them), and the
# flushes of a minute name the same exemplar for a small segment (ExemplarMemory), so a
# 5-minute bucket can hold any number of repeats: groupUniqArrayArray(5) keeps five
# distinct ids whatever their number. An hour is rolled up from FINAL 5-minute rows, each
# of at most five ids and the minutes' ids apart: the first five distinct of the first 60
# met are five distinct ids of the hour, without a hash set per group (a quarter of a
# roll-up's CPU per row, README, Benchmarks; the detectors' queries read FINAL roll-ups
# the same way).
FIVE_MINUTES = Rollup(
    "ml_segment_rollup_5m", 300, "ml_segment_aggregates", "",
    "groupUniqArrayArray(5)(exemplar_trace_ids)",
)  # fmt: skip
ONE_HOUR = Rollup(
    "ml_segment_rollup_1h", 3600, "ml_segment_rollup_5m", "FINAL",
    "arraySlice(arrayDistinct(groupArrayArray(60)(exemplar_trace_ids)), 1, 5)",
)  # fmt: skip

_KEYS = "model_name, model_version, model_stage, segment_dim, segment_value, quantity"
_INSERT = """
INSERT INTO {table}
SELECT model_name, model_version, model_stage,
       toStartOfInterval(bucket_start, INTERVAL {seconds} SECOND, 'UTC') AS bucket,
       segment_dim, segment_value, quantity,
       sum(count), sum(sampled), sum(missing), sum(numeric_count), sum(sum), sum(sum_sq),
       min(min), max(max), sumMap(histogram), sumMap(categories),
       {exemplars}, {{now:DateTime64(3, 'UTC')}}
FROM {source} {final}
WHERE bucket_start >= {{first:DateTime('UTC')}} AND bucket_start < {{last:DateTime('UTC')}}
  AND toUnixTimestamp(toStartOfInterval(bucket_start, INTERVAL {seconds} SECOND, 'UTC'))
      IN {{buckets:Array(UInt32)}}
GROUP BY model_name, model_version, model_stage, bucket, segment_dim, segment_value, quantity
"""


def roll_up(
    client: Client,
    rollup: Rollup,
    start: dt.datetime,
    end: dt.datetime,
    *,
    settle: int = 60,
    now: dt.datetime | None = None,  # the wall clock (tests set it)
) -> int:
    """Roll up the complete buckets of [start, end) that are missing, or settled since
    their roll-up (see above); return how many were rolled up.

    The 1-hour roll-up is built from the 5-minute one: roll that up first.
    """
    size = rollup.seconds
    moment = _text(int((now or dt.datetime.now(dt.timezone.utc)).timestamp()))
    first = int(start.timestamp()) // size * size
    last = int(end.timestamp()) // size * size  # buckets starting before it are complete
    if last <= first:
        return 0
    current = _current_buckets(client, rollup, first, last, settle, moment)
    # Roll up what is missing, and what settled after its roll-up was made.
    wanted = [b for b in range(first, last, size) if not current.get(b, False)]
    insert = _INSERT.format(
        table=rollup.table,
        seconds=size,
        source=rollup.source,
        final=rollup.final,
        exemplars=rollup.exemplars,
    )
    for run in _chunks(_consecutive(wanted, size), max(1, _INSERT_SECONDS // size)):
        first_text, last_text = _text(run[0]), _text(run[-1] + size)
        client.command(
            insert,
            parameters={"first": first_text, "last": last_text, "buckets": run, "now": moment},
            settings=DETECTOR_SETTINGS,
        )
    return len(wanted)


def _current_buckets(
    client: Client, rollup: Rollup, first: int, last: int, settle: int, moment: str
) -> dict[int, bool]:
    """The buckets of [first, last) rolled up already: True when that roll-up is current.

    Current means made after the bucket settled, or the bucket has not settled
    yet (``moment`` is before its end plus ``settle``).
    """
    rows = client.query(
        "SELECT bucket_start, max(rolled_at) >= settled OR {now:DateTime('UTC')} < settled "
        "FROM (SELECT *, bucket_start + toIntervalSecond({size:UInt32} + {settle:UInt32}) "
        f"AS settled FROM {rollup.table}) "
        "WHERE bucket_start >= {first:DateTime('UTC')} "
        "AND bucket_start < {last:DateTime('UTC')} GROUP BY bucket_start, settled",
        parameters={
            "first": _text(first),
            "last": _text(last),
            "size": rollup.seconds,
            "settle": settle,
            "now": moment,
        },
    ).result_rows
    return {int(row[0].replace(tzinfo=dt.timezone.utc).timestamp()): row[1] for row in rows}


def _consecutive(buckets: list[int], size: int) -> list[list[int]]:
    """Runs of consecutive buckets: one insert each, reading only its own time range.

    A bucket that had no calls is wanted every time, and must not widen the read.
    """
    runs: list[list[int]] = []
    for bucket in buckets:
        if runs and bucket == runs[-1][-1] + size:
            runs[-1].append(bucket)
        else:
            runs.append([bucket])
    return runs


def _chunks(runs: list[list[int]], most: int) -> list[list[int]]:
    """Each run cut into pieces of at most ``most`` buckets, one insert each: a first run
    rolls up hours of history, and in one insert its GROUP BY and the part it writes took
    the process gigabytes past its steady state (README, Benchmarks: ``bench/detect.py``)."""
    return [run[i : i + most] for run in runs for i in range(0, len(run), most)]


_INSERT_SECONDS = 600
"""The most time one roll-up insert covers (1-hour buckets: one). Its GROUP BY holds a
state per bucket, segment and quantity (two maps and a set of exemplars each): half an
hour of a large store's segments spilled past DETECTOR_SETTINGS' limit and cost about
twice the CPU per row of ten minutes (README, Benchmarks: ``bench/detect.py``)."""


def _text(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def forget_rollups(client: Client, start: dt.datetime, end: dt.datetime) -> None:
    """Drop both roll-ups' buckets in the whole hours around [start, end], for minute rows
    written there after the fact (a backfill of history): a bucket rolled up before them
    would otherwise stand for good once settled. The next run that reads them rolls them
    up again. A mutation, run to its end: only where a roll-up holds rows."""
    first = start.replace(minute=0, second=0, microsecond=0)
    last = end.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    bounds = {"start": _text(int(first.timestamp())), "end": _text(int(last.timestamp()))}
    where = "bucket_start >= {start:DateTime('UTC')} AND bucket_start < {end:DateTime('UTC')}"
    for rollup in (FIVE_MINUTES, ONE_HOUR):
        held = client.query(
            f"SELECT count() FROM {rollup.table} WHERE {where}", parameters=bounds
        ).result_rows[0][0]
        if held:
            client.command(
                f"ALTER TABLE {rollup.table} DELETE WHERE {where} SETTINGS mutations_sync = 2",
                parameters=bounds,
            )
