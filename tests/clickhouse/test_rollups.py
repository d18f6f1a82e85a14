"""Roll-ups hold exactly the minute aggregates, regrouped; unsettled buckets are rolled again."""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
from read_limit import THREE_DAYS, ReadLimit
from shop_traffic import END, ingest, traffic

from segwatch.clickhouse.detection import load_manifest, run_detector
from segwatch.clickhouse.rollups import (
    _INSERT_SECONDS,
    FIVE_MINUTES,
    LATE_AFTER,
    ONE_HOUR,
    RollUpTurns,
    _chunks,
    _consecutive,
    roll_up,
    roll_up_for,
)
from segwatch.collector.store.late_rows import late_bucket_rows

_TOTALS = (
    "SELECT segment_dim, segment_value, quantity, toStartOfHour(bucket_start) AS hour, "
    "sum(count), sum(sampled), sum(missing), sum(sum), min(min), max(max), "
    "sumMap(histogram), sumMap(categories) FROM {table} {final} "
    "GROUP BY ALL ORDER BY ALL"
)


# Each rolled-up row's exemplars beside every distinct exemplar of its bucket's minute rows.
_EXEMPLARS = (
    "SELECT rolled.ids, minute.ids FROM ("
    "  SELECT model_name, segment_dim, segment_value, quantity, bucket_start, "
    "         exemplar_trace_ids AS ids FROM {table} FINAL) AS rolled "
    "JOIN ("
    "  SELECT model_name, segment_dim, segment_value, quantity, "
    "         toStartOfInterval(bucket_start, INTERVAL {seconds} SECOND) AS bucket_start, "
    "         groupUniqArrayArray(exemplar_trace_ids) AS ids "
    "  FROM ml_segment_aggregates GROUP BY ALL) AS minute "
    "USING (model_name, segment_dim, segment_value, quantity, bucket_start)"
)


def _at(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


def test_rollups_regroup_the_minute_rows_exactly(client, recorder) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = traffic(seed=6, color_weights_now=[0.2, 0.3, 0.5])
    ingest(client, recorder, rows)
    start, end = _at(END - 2 * 3600), _at(END)
    assert roll_up(client, FIVE_MINUTES, start, end) == 15  # the 75 minutes of calls in 2 hours
    assert roll_up(client, ONE_HOUR, start, end) == 2
    minute = client.query(_TOTALS.format(table="ml_segment_aggregates", final="")).result_rows
    for table in (FIVE_MINUTES.table, ONE_HOUR.table):
        rolled = client.query(_TOTALS.format(table=table, final="FINAL")).result_rows
        assert rolled == minute, table
    # Exemplars: five distinct trace ids of the bucket's calls (all of them when fewer).
    for rollup in (FIVE_MINUTES, ONE_HOUR):
        pairs = client.query(
            _EXEMPLARS.format(table=rollup.table, seconds=rollup.seconds)
        ).result_rows
        held = client.query(f"SELECT count() FROM {rollup.table} FINAL").result_rows[0][0]
        assert len(pairs) == held, rollup.table  # every rolled-up row has its minute rows
        for ids, bucket_ids in pairs:
            assert len(set(ids)) == len(ids) == min(5, len(bucket_ids)), rollup.table
            assert set(ids) <= set(bucket_ids), rollup.table
    buckets = client.query(
        f"SELECT count(), uniqExact(bucket_start) FROM {ONE_HOUR.table} FINAL "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.color'"
    ).result_rows
    assert buckets == [(2, 2)]
    # Hours without their 5-minute buckets are rolled up from the minute rows: the same.
    client.command(f"TRUNCATE TABLE {ONE_HOUR.table}")
    client.command(f"TRUNCATE TABLE {FIVE_MINUTES.table}")
    assert roll_up(client, ONE_HOUR, start, end) == 2
    rolled = client.query(_TOTALS.format(table=ONE_HOUR.table, final="FINAL")).result_rows
    assert rolled == minute
    pairs = client.query(
        _EXEMPLARS.format(table=ONE_HOUR.table, seconds=ONE_HOUR.seconds)
    ).result_rows
    assert (
        len(pairs) == client.query(f"SELECT count() FROM {ONE_HOUR.table} FINAL").result_rows[0][0]
    )
    for ids, bucket_ids in pairs:
        assert len(set(ids)) == len(ids) == min(5, len(bucket_ids))
        assert set(ids) <= set(bucket_ids)


def test_rolled_up_exemplars_are_five_distinct_calls_of_the_bucket(client) -> None:  # type: ignore[no-untyped-def]
    """An hour of minute rows with many exemplars each (two partial rows a minute, five
    trace ids each, one repeated), and a small segment whose 20 flushes a minute each name
    the minute's one exemplar (as ExemplarMemory makes them), left unmerged as flushes
    leave them: every 5-minute and 1-hour row keeps five distinct ids of its bucket; a
    bucket with fewer keeps them all."""
    hour = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = []
    for minute in range(60):
        at = hour + dt.timedelta(minutes=minute)
        for part in range(2):
            ids = [f"{minute:02d}{part}{i}".ljust(32, "0") for i in range(5)]
            if part:
                ids[0] = f"{minute:02d}00".ljust(32, "0")  # the first part's first call again
            rows.append(_minute_row(at, "many", ids))
        rows += [_minute_row(at, "small", [f"s{minute:02d}".ljust(32, "0")])] * 20
    few = [f"f{i}".ljust(32, "0") for i in range(3)]
    rows.append(_minute_row(hour, "few", few))
    # Partial rows stay apart, as each flush's do (the collector inserts without merging).
    client.insert("ml_segment_aggregates", rows, column_names=_AGGREGATE_COLUMNS,
                  settings={"optimize_on_insert": 0})  # fmt: skip
    assert client.query(
        "SELECT count() FROM ml_segment_aggregates WHERE segment_value = 'small'"
    ).result_rows == [(60 * 20,)]
    end = hour + dt.timedelta(hours=1)
    assert roll_up(client, FIVE_MINUTES, hour, end) == 12
    assert roll_up(client, ONE_HOUR, hour, end) == 1
    for rollup in (FIVE_MINUTES, ONE_HOUR):
        pairs = client.query(
            _EXEMPLARS.format(table=rollup.table, seconds=rollup.seconds)
        ).result_rows
        assert len(pairs) == 2 * (12 // (rollup.seconds // 300)) + 1, rollup.table
        for ids, bucket_ids in pairs:
            assert len(set(ids)) == len(ids) == min(5, len(bucket_ids)), rollup.table
            assert set(ids) <= set(bucket_ids), rollup.table
        assert sorted(max(pairs, key=lambda pair: len(pair[1]))[1]) != sorted(few)
        assert [sorted(ids) for ids, _ in pairs if len(ids) == 3] == [sorted(few)]


_AGGREGATE_COLUMNS = [
    "model_name", "model_version", "model_stage", "bucket_start", "segment_dim", "segment_value",
    "quantity", "count", "sampled", "missing", "numeric_count", "sum", "sum_sq", "min", "max",
    "histogram", "categories", "exemplar_trace_ids",
]  # fmt: skip


def _minute_row(at: dt.datetime, value: str, ids: list[str]) -> list[object]:
    """One partial minute row of segment color=``value``: five calls of size 1."""
    return ["shop", "1", "serving", at, "feature.color", value, "feature.size",
            5.0, 5, 0.0, 5.0, 5.0, 5.0, 1.0, 1.0, {16384: 5.0}, {}, ids]  # fmt: skip


def test_a_bucket_rolled_before_it_settled_is_rolled_again_once(client, recorder) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = traffic(seed=7, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows[:-1])
    start, end = _at(END - 600), _at(END)
    early = _at(END + 10)  # the last bucket ended 10 s ago: not settled
    assert roll_up(client, FIVE_MINUTES, start, end, now=early) == 2
    ingest(client, recorder, rows[-1:])  # a late call, in the last bucket
    # Until it settles, the first roll-up serves (every detector of a run reads it).
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(END + 30)) == 0
    # Once settled, the bucket rolled up too early is rolled again, once: the late call counts.
    settled = _at(END + 300)
    assert roll_up(client, FIVE_MINUTES, start, end, now=settled) == 1
    assert roll_up(client, FIVE_MINUTES, start, end, now=settled) == 0
    (calls,) = client.query(
        f"SELECT sum(count) FROM {FIVE_MINUTES.table} FINAL "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.color'"
    ).result_rows[0]
    assert calls == sum(1 for at, _ in rows if at >= END - 600)


def test_a_long_roll_up_is_inserted_in_pieces() -> None:
    """A first run rolls up hours of history: each insert holds at most _INSERT_SECONDS of
    buckets (bounding its memory and its GROUP BY's size), no insert spans a gap (it would
    read the gap's minutes), and the pieces cover every bucket once, in order."""
    five = FIVE_MINUTES.seconds
    most = _INSERT_SECONDS // five
    runs = _consecutive([b * five for b in [*range(30), *range(40, 45)]], five)
    pieces = _chunks(runs, most)
    assert 1 < most < 30 and all(0 < len(piece) <= most for piece in pieces)
    assert all(piece[-1] - piece[0] == (len(piece) - 1) * five for piece in pieces)
    assert len(pieces) == -(-30 // most) + -(-5 // most)
    assert [b for piece in pieces for b in piece] == [b for run in runs for b in run]
    assert _chunks(_consecutive([0, 3600], 3600), 1) == [[0], [3600]]


def test_a_settled_bucket_is_rolled_again_once_calls_landed_late_in_it(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """Calls that reach the minute table after a bucket's roll-up settled (a store outage's
    spooled backlog) count once their writer marks the bucket late: its 5-minute and
    1-hour roll-ups made before the mark are rolled up again, once; unmarked, they stand."""
    rows, _, _ = traffic(seed=8, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows[:-1])
    start, end = _at(END - 3600), _at(END)
    settled = END + 3600  # the hour and its buckets settled long ago
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(settled)) > 0
    assert roll_up(client, ONE_HOUR, start, end, now=_at(settled)) == 1
    ingest(client, recorder, rows[-1:])  # a late call, in the last bucket
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(settled + 60)) == 0  # unmarked
    # A mark made well before the roll-ups (an earlier late flush) leaves them standing.
    late_bucket_rows([rows[-1][0]], settled - LATE_AFTER - 1).insert_into(client)
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(settled + 120)) == 0
    marked = settled + 150  # the late call landed
    late_bucket_rows([rows[-1][0]], marked).insert_into(client)
    # The hour first: its 5-minute bucket is stale, so it comes from the minute rows.
    later = marked + LATE_AFTER + 1  # a roll-up less than LATE_AFTER after a mark is stale
    assert roll_up(client, ONE_HOUR, start, end, now=_at(later)) == 1
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(later)) == 1
    for rollup in (FIVE_MINUTES, ONE_HOUR):
        assert roll_up(client, rollup, start, end, now=_at(later + 60)) == 0, rollup.table
        (calls,) = client.query(
            f"SELECT sum(count) FROM {rollup.table} FINAL "
            "WHERE segment_dim = '__all__' AND quantity = 'feature.color'"
        ).result_rows[0]
        assert calls == sum(1 for at, _ in rows if at >= END - 3600), rollup.table
    # A writer's clock 10 s behind the runner's: a roll-up made (by the runner's clock)
    # just before the mark's landing reads as made after it, but is within the margin.
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(later + 300)) == 0
    delete_rolled = f"DELETE FROM {FIVE_MINUTES.table} WHERE bucket_start = {{b:DateTime('UTC')}}"
    client.command(delete_rolled, parameters={"b": _at(END - 300)})  # so that it is made now:
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(later + 300)) == 1
    late_bucket_rows([rows[-1][0]], later + 300 - 10).insert_into(client)
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(later + 400)) == 1
    # Made because of a mark, a roll-up is stamped past its margin: the next detector of
    # the run, seconds later, takes it as it is.
    late_bucket_rows([rows[-1][0]], later + 410).insert_into(client)
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(later + 415)) == 1
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(later + 416)) == 0


def test_a_writer_marks_only_the_buckets_it_gave_rows_late() -> None:
    """A flush seconds after its minutes marks nothing; rows LATE_AFTER or more past
    their 5-minute bucket's end mark that bucket, once; a backfill marks every bucket."""
    five = FIVE_MINUTES.seconds
    minutes = np.array([END - 600, END - 540, END - 300, END - 60])  # two buckets, two rows each
    on_time = late_bucket_rows(minutes, END + LATE_AFTER - 1)
    assert len(on_time) == 1 and list(on_time.columns["bucket_start"]) == [END - 600]
    assert len(late_bucket_rows(minutes[2:], END + 5)) == 0  # seconds after: on time
    late = late_bucket_rows(minutes, END + LATE_AFTER)
    assert list(late.columns["bucket_start"]) == [END - 2 * five, END - five]
    assert set(late.columns["marked_at"]) == {(END + LATE_AFTER) * 1000}  # milliseconds
    assert len(late_bucket_rows(minutes, END - 600, every=True)) == 2


def _held(client, rollup) -> int:  # type: ignore[no-untyped-def]
    return int(client.query(f"SELECT count() FROM {rollup.table}").result_rows[0][0])


def test_a_run_rolls_its_hours_up_while_another_has_the_5_minute_turn(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """In a group, a run waiting for the 5-minute roll-up's turn (another run rolling up
    its buckets) rolls its baseline's hours up meanwhile; then its 5-minute buckets."""
    rows, _, _ = traffic(seed=6, color_weights_now=[0.2, 0.3, 0.5])
    ingest(client, recorder, rows)
    spec = next(s for s in load_manifest() if s.name == "data_quality")  # a 6-hour baseline
    turns = RollUpTurns()
    with turns.five_minutes:  # another run's 5-minute roll-up
        run = threading.Thread(
            target=roll_up_for, args=(client, spec.sql, spec.maps, spec.windows(_at(END)), turns)
        )
        run.start()
        deadline = time.monotonic() + 60
        while not _held(client, ONE_HOUR) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _held(client, ONE_HOUR)  # the hour of calls in its baseline's whole hours
        assert not _held(client, FIVE_MINUTES)  # waiting for the turn
    run.join(60)
    assert not run.is_alive()
    assert _held(client, FIVE_MINUTES)  # the last hour's buckets, then


def test_reads_of_the_minute_rows_skip_to_their_five_minute_slices(client) -> None:  # type: ignore[no-untyped-def]
    """Rolling up ten minutes, or an hour, of three days of minute rows (864,000) reads
    the granules of their 5-minute slices (under 100,000 rows), and so does metric_shift
    over its six hours and a quarter: not the whole table's bucket_start column."""
    client.command(THREE_DAYS, parameters={"end": END})
    limited = ReadLimit(client, 100_000)
    assert roll_up(limited, FIVE_MINUTES, _at(END - 600), _at(END)) == 2
    assert roll_up(limited, ONE_HOUR, _at(END - 3 * 3600), _at(END - 2 * 3600)) == 1
    held = client.query(
        f"SELECT sum(count) FROM {ONE_HOUR.table} FINAL WHERE segment_dim = 'feature.d'"
    ).result_rows[0][0]
    minutes = client.query(
        "SELECT sum(count) FROM ml_segment_aggregates WHERE segment_dim = 'feature.d' "
        "AND bucket_start >= {first:DateTime('UTC')} AND bucket_start < {last:DateTime('UTC')}",
        parameters={"first": _at(END - 3 * 3600), "last": _at(END - 2 * 3600)},
    ).result_rows[0][0]
    assert held == minutes > 0
    for spec in load_manifest():  # metric_shift's query, version_drift's run_if
        if spec.name in ("metric_shift", "version_drift"):
            run_detector(limited, spec, _at(END))  # type: ignore[arg-type]
