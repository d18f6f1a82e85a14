"""Rolling ml_segment_aggregates up to 5-minute and 1-hour buckets for the detectors.

A detector run reads its current window from the 5-minute roll-up and its
baseline's whole hours from the 1-hour one (detectors/rolled_up.sql): a few rows per
segment and quantity instead of every minute (a day of 1,000 segments x 30
quantities is 43 million minute rows); ``metric_shift``, which reads a few quantities
in 15-minute slots, reads the minute rows. The minute table stays the source of
truth; :func:`roll_up` builds the buckets a run needs that are not rolled up yet,
and rolls a bucket up once more after it settled (``settle`` seconds after its end)
if its roll-up was made before, so calls that arrived late still count (a roll-up replaces the
bucket's earlier rows: ReplacingMergeTree on ``rolled_at``, read with
``FINAL``). Until then the first roll-up serves every detector of a run; a
bucket rolled up after it settled stands until calls later still reach its minute
rows: their writer (a collector's flush, a backfill) marks the bucket in
``ml_late_buckets`` once they landed (:data:`LATE_AFTER`), and a roll-up made
before the mark is rolled up again by the next run that reads the bucket (the
hour around it too).

5-minute buckets come from the minute rows. A 1-hour bucket comes from its 5-minute
ones when all twelve are held (current, with the maps it is asked for), and from the
minute rows otherwise: a first run's baseline hours then cost one GROUP BY into hours
(a third of the CPU of rolling them up into 5-minute buckets first, which no detector
of those hours reads: see roll_up_for). Only complete buckets wholly in the range asked
for are rolled up, and only those that hold calls.

Histograms and categories: summing the maps is most of a roll-up's cost, and most
detectors read only counts and sums (``volume``, ``bias``), or read
the maps of the current window only (``data_quality``). ``maps_from`` rolls the buckets
before it up without them: those rows hold empty maps and ``maps = 0``, except the whole
model's (``__all__``) rows, which are few and keep theirs (``data_quality`` reads its
baseline's categories there). A bucket rolled up without maps is rolled up again, maps
included, by the first run that asks for them; a bucket never loses its maps. An hour's
row has its maps when all its 5-minute rows had theirs (or, rolled up from the minute
rows, when it was rolled up with them).

Two runs may roll up the same buckets at once (two collectors on one store, or the
scheduler beside ``POST /api/v1/detect``): one that read what is held before the
other's roll-up landed inserts after it, and its rows, stamped later, are the ones
FINAL keeps. A bucket that has not settled yet is therefore always rolled up with
its maps: the newest buckets are where runs meet, and the first detector of a run
rolls them up with maps anyway. An older bucket rolled up without maps over one
rolled up with them is caught by the reader's check (``sw_maps_read`` in
``detectors/rolled_up.sql``), and the runner rolls it up again (see
:mod:`.detection`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from .store import DETECTOR_SETTINGS

__all__ = [
    "FIVE_MINUTES",
    "LATE_AFTER",
    "LATE_BUCKETS",
    "MINUTE_ROWS_BY_KEY",
    "ONE_HOUR",
    "SETTLE",
    "LateMarks",
    "RollUpTurns",
    "Rollup",
    "roll_up",
    "roll_up_for",
]

SETTLE = 60
"""Seconds after a bucket's end until it settles: a roll-up made before is made again after."""
LATE_BUCKETS = "ml_late_buckets"
"""Where writers mark the 5-minute buckets whose minute rows they inserted late."""
LATE_AFTER = SETTLE // 2
"""A writer marks the 5-minute buckets of the minute rows it inserts this many seconds or
more after the bucket's end: a settled roll-up (made ``SETTLE`` seconds after it at the
earliest) may have missed them. Half of ``SETTLE`` leaves room for the writer's clock to
lag the runner's; a flush of on-time calls (seconds after their minute) marks nothing.
Also the margin after a mark within which a roll-up still counts as made before it
(see LateMarks)."""


@dataclass(frozen=True)
class Rollup:
    table: str
    seconds: int
    source: str  # the table its buckets are built from
    final: str  # "FINAL" when the source is itself a roll-up
    with_maps: str  # the aggregates of histogram, categories, exemplar_trace_ids and maps
    without_maps: str  # the same for a bucket rolled up without its maps (see above)
    # the whole model's rows of a bucket rolled up without maps, when they are read apart
    # from the segments' ("": one recipe for every row, ``without_maps``)
    whole_model: str = ""

    @property
    def of_five_minutes(self) -> bool:
        """Built from the 5-minute roll-up (the 1-hour one), when its buckets are there."""
        return self.source == "ml_segment_rollup_5m"


# Exemplars, five distinct trace ids of the bucket's calls. The minute rows are read
# unmerged (a minute has a partial row per flush until the engine merges them), and the
# flushes of a minute name the same exemplar for a small segment (ExemplarMemory), so a
# 5-minute bucket can hold any number of repeats: groupUniqArrayArray(5) keeps five
# distinct ids whatever their number (and so does an hour rolled up from the minute
# rows: _HOUR_FROM_MINUTES). An hour is rolled up from FINAL 5-minute rows, each
# of at most five ids and the minutes' ids apart: the first five distinct of the first 60
# met are five distinct ids of the hour, without a hash set per group (a quarter of a
# roll-up's CPU per row, README, Benchmarks; the detectors' queries read FINAL roll-ups
# the same way). A bucket rolled up without maps is history that only volume reads the
# exemplars of (a vanished segment's, five distinct ids over its baseline's buckets):
# one minute row's ids (one that has some) are enough there, and cost no set per group.
# Its segments' rows and its whole model's are read apart, in two branches of one insert:
# the segments' without the map columns at all, the whole model's alone with them (a
# few rows per quantity and minute, found by the key). One pass reading the maps of
# every row to sum the whole model's took a third of an hour's roll-up from the minute
# rows (0.85 against 0.54 + 0.02 CPU-s on bench/detect.py's store).
FIVE_MINUTES = Rollup(
    "ml_segment_rollup_5m", 300, "ml_segment_aggregates", "",
    "sumMap(histogram), sumMap(categories), groupUniqArrayArray(5)(exemplar_trace_ids), "
    "toUInt8(1)",
    "CAST(map(), 'Map(Int16, Float64)'), CAST(map(), 'Map(String, Float64)'), "
    "anyIf(exemplar_trace_ids, notEmpty(exemplar_trace_ids)), toUInt8(0)",
    "sumMap(histogram), sumMap(categories), "
    "anyIf(exemplar_trace_ids, notEmpty(exemplar_trace_ids)), toUInt8(1)",
)  # fmt: skip
_HOUR = (
    "sumMap(histogram), sumMap(categories), "
    "arraySlice(arrayDistinct(groupArrayArray(60)(exemplar_trace_ids)), 1, 5), min(maps)"
)
ONE_HOUR = Rollup("ml_segment_rollup_1h", 3600, "ml_segment_rollup_5m", "FINAL", _HOUR, _HOUR)
_HOUR_FROM_MINUTES = Rollup(ONE_HOUR.table, ONE_HOUR.seconds, FIVE_MINUTES.source, "",
                            FIVE_MINUTES.with_maps, FIVE_MINUTES.without_maps,
                            FIVE_MINUTES.whole_model)  # fmt: skip
"""An hour whose 5-minute buckets are not all held, rolled up from its minute rows (with
the 5-minute recipes: the minute rows are unmerged, see FIVE_MINUTES)."""

MINUTE_ROWS_BY_KEY = (
    "AND toStartOfFiveMinutes(bucket_start) >= toStartOfFiveMinutes({first:DateTime('UTC')}) "
    "AND toStartOfFiveMinutes(bucket_start) < {last:DateTime('UTC')}"
)
"""The condition, beside ``bucket_start >= {first} AND bucket_start < {last}`` (query
parameters of those names), that lets a read of the minute rows skip by the sorting key
to the 5-minute slices of [first, last) (0011_aggregates_by_time.sql). It follows from
the range, so it changes no result; without it the engine reads ``bucket_start`` in every
part whose time range overlaps [first, last) to find them (it does not carry a condition
on the column over to the key's ``toStartOfFiveMinutes`` of it): 4,466 granules against
21 for 5 minutes of ``bench/detect.py``'s day (parts spanning the day), 0.098 against
0.007 CPU-s."""

_INSERT = """
INSERT INTO {table}
    (model_name, model_version, model_stage, bucket_start, segment_dim, segment_value, quantity,
     count, sampled, missing, numeric_count, sum, sum_sq, min, max,
     histogram, categories, exemplar_trace_ids, maps, rolled_at)
"""
_SELECT = """
SELECT model_name, model_version, model_stage,
       toStartOfInterval(bucket_start, INTERVAL {seconds} SECOND, 'UTC') AS bucket,
       segment_dim, segment_value, quantity,
       sum(count), sum(sampled), sum(missing), sum(numeric_count), sum(sum), sum(sum_sq),
       min(min), max(max), {maps}, {{now:DateTime64(3, 'UTC')}}
FROM {source} {final}
WHERE bucket_start >= {{first:DateTime('UTC')}} AND bucket_start < {{last:DateTime('UTC')}} {by_key}
  AND toUnixTimestamp(toStartOfInterval(bucket_start, INTERVAL {seconds} SECOND, 'UTC'))
      IN {{buckets:Array(UInt32)}} {rows}
GROUP BY model_name, model_version, model_stage, bucket, segment_dim, segment_value, quantity
"""


def roll_up(
    client: Client,
    rollup: Rollup,
    start: dt.datetime,
    end: dt.datetime,
    *,
    settle: int = SETTLE,
    now: dt.datetime | None = None,  # the wall clock (tests set it)
    maps_from: dt.datetime | None = None,
    marks: LateMarks | None = None,
) -> int:
    """Roll up the buckets wholly in [start, end) that are missing, or settled since
    their roll-up, or lack the maps asked for (see above); return how many were rolled up.

    Buckets starting at or after ``maps_from`` get their histograms and categories
    (``None``, the default: every bucket does); those before it are rolled up without
    them, unless their earlier roll-up had them or they have not settled yet (``now``
    before their end plus ``settle``: see above). A 1-hour bucket is built from its
    5-minute ones when they are all held with the maps it needs, from the minute rows
    otherwise. ``marks``: the late marks read for a range around [start, end) (read
    now when None or narrower).
    """
    size = rollup.seconds
    clock = now or dt.datetime.now(dt.timezone.utc)
    moment = int(clock.timestamp())
    # Only the buckets wholly in [start, end): an hour that began before ``start`` may
    # lack 5-minute buckets nobody rolled up, and its roll-up would stand for good.
    first = -(-int(start.timestamp()) // size) * size
    last = int(end.timestamp()) // size * size  # buckets starting before it are complete
    if last <= first:
        return 0
    maps_first = first if maps_from is None else int(maps_from.timestamp())
    if marks is None or not marks.cover(first, last):
        marks = LateMarks.read(client, first, last)
    held, latest = _held_buckets(client, rollup, first, last, settle, moment, marks)
    # Stamped after every earlier roll-up of these buckets, so that FINAL keeps this one
    # even when the earlier was made within the same millisecond (or the clock stepped back),
    # and past the margin of their marks: made after this run read them, it holds their
    # late rows (see LateMarks).
    stamp = max(clock, latest + dt.timedelta(milliseconds=1)) if latest else clock
    # Roll up what is missing, what settled after its roll-up was made, and what lacks
    # the maps asked for; with its maps when asked, when its roll-up had them, or when
    # it has not settled (another run may be rolling it up with them right now).
    unsettled_from = moment - size - settle  # buckets starting after it
    wanted: dict[bool, list[int]] = {True: [], False: []}
    for bucket in range(first, last, size):
        current, had_maps = held.get(bucket, (False, False))
        maps = bucket >= maps_first or had_maps or bucket > unsettled_from
        if not current or (maps and not had_maps):
            wanted[maps].append(bucket)
    if not wanted[True] and not wanted[False]:
        return 0
    # A bucket without calls rolls up to nothing: no insert for it (a first run's
    # baseline before the store's first call, or a backfilled file's, was asked again
    # every run, since nothing is held for it, and cost an insert of nothing each).
    lowest, highest = min(wanted[True] + wanted[False]), max(wanted[True] + wanted[False])
    filled = _buckets_with_calls(client, size, lowest, highest + size)
    wanted = {maps: [b for b in buckets if b in filled] for maps, buckets in wanted.items()}
    if not wanted[True] and not wanted[False]:
        return 0
    finer = (
        _held_buckets(client, FIVE_MINUTES, lowest, highest + size, settle, moment, marks)[0]
        if rollup.of_five_minutes else {}
    )  # fmt: skip
    for maps, buckets in wanted.items():
        if not rollup.of_five_minutes:  # 5-minute buckets: from the minute rows
            _insert(client, rollup, maps, buckets, stamp)
            continue
        # an hour from its 5-minute buckets when all are held, with the maps asked for
        from_finer = [b for b in buckets if _finer_held(finer, b, size, maps)]
        _insert(client, rollup, maps, from_finer, stamp)
        _insert(client, _HOUR_FROM_MINUTES, maps, _without(buckets, from_finer), stamp)
    return len(wanted[True]) + len(wanted[False])


def _insert(
    client: Client, rollup: Rollup, maps: bool, buckets: list[int], stamp: dt.datetime
) -> None:
    """Roll ``buckets`` up from the roll-up's source, with or without their maps, in
    inserts of at most a few minutes' states each (see _INSERT_SECONDS)."""
    size = rollup.seconds
    by_key = MINUTE_ROWS_BY_KEY if rollup.source == FIVE_MINUTES.source else ""

    def select(recipe: str, rows: str = "") -> str:
        return _SELECT.format(
            seconds=size,
            source=rollup.source,
            final=rollup.final,
            maps=recipe,
            rows=rows,
            by_key=by_key,
        )

    if maps:
        selected = select(rollup.with_maps)
    elif rollup.whole_model:  # the segments' rows apart from the whole model's (see above)
        selected = (
            select(rollup.without_maps, "AND segment_dim != '__all__'")
            + "UNION ALL"
            + select(rollup.whole_model, "AND segment_dim = '__all__'")
        )
    else:
        selected = select(rollup.without_maps)
    insert = _INSERT.format(table=rollup.table) + selected
    most = max(1, (_INSERT_SECONDS if maps else _INSERT_SECONDS_WITHOUT_MAPS) // size)
    for run in _chunks(_consecutive(buckets, size), most):
        client.command(
            insert,
            parameters={
                "first": _text(run[0]),
                "last": _text(run[-1] + size),
                "buckets": run,
                "now": stamp.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            },
            settings=_INSERT_SETTINGS,
        )


def _finer_held(finer: dict[int, tuple[bool, bool]], bucket: int, size: int, maps: bool) -> bool:
    """Whether every 5-minute bucket of ``bucket`` is held current (with its maps when
    ``maps``) in ``finer`` (empty unless the roll-up is built from the 5-minute one)."""
    step = FIVE_MINUTES.seconds
    return bool(finer) and all(
        finer.get(b, (False, False))[0] and (finer[b][1] or not maps)
        for b in range(bucket, bucket + size, step)
    )


def _without(buckets: list[int], chosen: list[int]) -> list[int]:
    taken = set(chosen)
    return [b for b in buckets if b not in taken]


def _held_buckets(
    client: Client,
    rollup: Rollup,
    first: int,
    last: int,
    settle: int,
    moment: int,
    late: LateMarks,
) -> tuple[dict[int, tuple[bool, bool]], dt.datetime | None]:
    """The buckets of [first, last) rolled up already: (current, maps) of their latest
    roll-up, current when the bucket has not settled yet (``moment`` is before its end
    plus ``settle``) or the roll-up was made after it settled and after the bucket's
    latest mark in ``ml_late_buckets`` (any of its 5-minute buckets', plus a margin:
    LateMarks), maps when every row has them; and the time a new roll-up of them
    must be stamped after (None: none held or marked): the latest roll-up's, or a
    later mark's margin.
    """
    rows = client.query(
        "SELECT bucket_start, argMax(current, rolled_at), argMax(maps, rolled_at), "
        "max(rolled_at) FROM ("
        "  SELECT bucket_start, rolled_at, min(maps) AS maps,"
        "         rolled_at >= settled OR {now:DateTime('UTC')} < settled AS current"
        "  FROM (SELECT bucket_start, rolled_at, maps, bucket_start"
        "        + toIntervalSecond({size:UInt32} + {settle:UInt32}) AS settled"
        f"       FROM {rollup.table}"
        "        WHERE bucket_start >= {first:DateTime('UTC')}"
        "          AND bucket_start < {last:DateTime('UTC')})"
        "  GROUP BY bucket_start, rolled_at, settled) "
        "GROUP BY bucket_start",
        parameters={
            "first": _text(first),
            "last": _text(last),
            "size": rollup.seconds,
            "settle": settle,
            "now": _text(moment),
        },
        settings=DETECTOR_SETTINGS,
    ).result_rows
    marks = late.of(rollup.seconds, first, last)
    unsettled_from = moment - rollup.seconds - settle  # buckets starting after it
    held = {}
    for row in rows:
        bucket = int(_utc(row[0]).timestamp())
        stale = bucket <= unsettled_from and bucket in marks and _utc(row[3]) <= marks[bucket]
        held[bucket] = (bool(row[1]) and not stale, bool(row[2]))
    # A roll-up made now read the marks first: it is stamped past their margins.
    latest = max([_utc(row[3]) for row in rows] + list(marks.values()), default=None)
    return held, latest


@dataclass(frozen=True)
class LateMarks:
    """The 5-minute buckets of [first, last) marked in ``ml_late_buckets``, each with its
    latest mark plus :data:`LATE_AFTER`: the time a roll-up of it must be stamped after
    to count (a writer's clock behind the runner's, or a replica that has not fetched the
    late rows yet when the runner reads, would make one made just after the mark miss
    them). Read once per detector run (:func:`roll_up_for`) for all its roll-ups.

    A roll-up made after its runner read a bucket's mark is stamped past that margin
    (see roll_up): it read the minute rows after it saw the mark, so the next detector
    of the run takes it as it is (right after a backfill, every detector would roll its
    buckets up again otherwise). Its stamp is then up to LATE_AFTER ahead of the clock,
    which no bucket's settling can be mistaken by: a call landing after such a roll-up
    lands LATE_AFTER or more after its bucket's end, and is marked.
    """

    first: int
    last: int
    marks: dict[int, dt.datetime]

    @classmethod
    def read(cls, client: Client, first: int, last: int) -> LateMarks:
        step = FIVE_MINUTES.seconds
        first = first // step * step
        rows = client.query(
            f"SELECT toUInt32(bucket_start), max(marked_at) FROM {LATE_BUCKETS} "
            "WHERE bucket_start >= {first:DateTime('UTC')} "
            "AND bucket_start < {last:DateTime('UTC')} GROUP BY 1",
            parameters={"first": _text(first), "last": _text(last)},
            settings=DETECTOR_SETTINGS,
        ).result_rows
        margin = dt.timedelta(seconds=LATE_AFTER)
        return cls(first, last, {int(bucket): _utc(mark) + margin for bucket, mark in rows})

    def cover(self, first: int, last: int) -> bool:
        return self.first <= first and last <= self.last

    def of(self, size: int, first: int, last: int) -> dict[int, dt.datetime]:
        """The latest (plus the margin) of each bucket of ``size`` seconds of [first, last)."""
        grouped: dict[int, dt.datetime] = {}
        for bucket, mark in self.marks.items():
            if first <= bucket < last:
                key = bucket // size * size
                grouped[key] = max(mark, grouped.get(key, mark))
        return grouped


def _utc(moment: dt.datetime) -> dt.datetime:
    """A time the store returned (naive, in UTC, or aware) as an aware UTC time."""
    return moment.replace(tzinfo=dt.timezone.utc)


def _buckets_with_calls(client: Client, size: int, first: int, last: int) -> set[int]:
    """The buckets (of ``size`` seconds) of [first, last) that hold minute rows (a few
    milliseconds: the sorting key's 5-minute slices leave out the rest of the table)."""
    rows = client.query(
        "SELECT DISTINCT toUInt32(toStartOfInterval(bucket_start, "
        f"INTERVAL {size} SECOND, 'UTC')) FROM {FIVE_MINUTES.source} "
        "WHERE bucket_start >= {first:DateTime('UTC')} AND bucket_start < {last:DateTime('UTC')} "
        + MINUTE_ROWS_BY_KEY,
        parameters={"first": _text(first), "last": _text(last)},
        settings=DETECTOR_SETTINGS,
    ).result_rows
    return {int(row[0]) for row in rows}


def _consecutive(buckets: list[int], size: int) -> list[list[int]]:
    """Runs of consecutive buckets: one insert each, reading only its own time range.

    Buckets without calls are not rolled up (see roll_up): a gap of them splits a run, so
    no insert reads across it.
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

_INSERT_SECONDS_WITHOUT_MAPS = 1800
"""Without maps a bucket's states are a few numbers each: half an hour's fit well within
DETECTOR_SETTINGS' limit, in a third of the inserts (each a part the engine merges)."""

_INSERT_SETTINGS = {**DETECTOR_SETTINGS, "optimize_on_insert": 0}
"""A roll-up's rows are unique per sorting key (they are its GROUP BY): merging each
inserted block by key, as a ReplacingMergeTree does by default, replaces nothing and
cost a quarter of a roll-up's CPU (README, Benchmarks: ``bench/detect.py``)."""


def _text(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class RollUpTurns:
    """The runs of a detector group roll each roll-up table up in turns: two runs rolling
    up one bucket at once would both do the work (the store keeps either: see above), and
    a run waiting its turn at one table does not hold up another's at the other. A first
    run's roll-ups are most of its time: one run's 5-minute buckets and another's hours
    then fill both sessions, where one turn for both tables kept the second idle."""

    five_minutes: threading.Lock = field(default_factory=threading.Lock)
    one_hour: threading.Lock = field(default_factory=threading.Lock)

    def of(self, rollup: Rollup) -> threading.Lock:
        return self.one_hour if rollup.table == ONE_HOUR.table else self.five_minutes


def roll_up_for(
    client: Client,
    sql: str,
    maps: str,
    windows: dict[str, dt.datetime],
    turns: RollUpTurns | None = None,
) -> None:
    """Roll up what a detector run reads and is not rolled up for good yet: the run of a
    detector whose query is ``sql`` (one that names no roll-up reads none) over ``windows``
    (window_start, window_end, baseline_start, baseline_end), with the histograms and
    categories of the rows it reads them from (``maps``: ``window``, ``all`` or ``""``,
    from the SQL's ``-- segwatch: reads the roll-ups' maps of`` line); the buckets before
    are rolled up without them, at a fraction of the cost. ``turns``: the group's turns at
    each table (None: a run alone).

    A detector that reads the 1-hour roll-up (detectors/rolled_up.sql) reads its
    baseline's whole hours there and only the rest in 5-minute buckets: those hours'
    5-minute buckets are not rolled up for it (a first run's hours of history then cost
    one GROUP BY into hours, from the minute rows, instead of two). Its hours come first:
    in a group, another run may be rolling up 5-minute buckets meanwhile (psi_drift's, of
    its window and trailing hour), and this run's own never fall in its whole hours.
    """
    if FIVE_MINUTES.table not in sql:
        return  # reads no roll-up (e.g. metric_shift, performance)
    start, end = windows["baseline_start"], windows["window_end"]
    maps_from = {"all": start, "window": windows["window_start"]}.get(maps, end)
    hours = _whole_hours(start, windows["baseline_end"]) if ONE_HOUR.table in sql else None
    marks = LateMarks.read(client, int(start.timestamp()), int(end.timestamp()))

    def turn(rollup: Rollup) -> contextlib.AbstractContextManager[object]:
        return turns.of(rollup) if turns else contextlib.nullcontext()

    if hours is None:
        with turn(FIVE_MINUTES):
            roll_up(client, FIVE_MINUTES, start, end, maps_from=maps_from, marks=marks)
        return
    with turn(ONE_HOUR):
        roll_up(client, ONE_HOUR, *hours, maps_from=maps_from, marks=marks)
    with turn(FIVE_MINUTES):
        roll_up(client, FIVE_MINUTES, start, hours[0], maps_from=maps_from, marks=marks)
        roll_up(client, FIVE_MINUTES, hours[1], end, maps_from=maps_from, marks=marks)


def _whole_hours(start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """The whole hours of [start, end) (rolled_up.sql's sw_hours_start, sw_hours_end), or
    None when it holds none."""
    size = ONE_HOUR.seconds
    first = -(-int(start.timestamp()) // size) * size
    last = int(end.timestamp()) // size * size
    if last <= first:
        return None
    return (dt.datetime.fromtimestamp(first, dt.timezone.utc),
            dt.datetime.fromtimestamp(last, dt.timezone.utc))  # fmt: skip
