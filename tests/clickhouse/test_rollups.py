"""Roll-ups hold exactly the minute aggregates, regrouped; unsettled buckets are rolled again."""

from __future__ import annotations

import datetime as dt

from shop_traffic import END, ingest, traffic

from segwatch.clickhouse.rollups import (
    _INSERT_SECONDS,
    FIVE_MINUTES,
    ONE_HOUR,
    _chunks,
    _consecutive,
    roll_up,
)

_TOTALS = (
    "SELECT segment_dim, segment_value, quantity, toStartOfHour(bucket_start) AS hour, "
    "sum(count), sum(sampled), sum(missing), sum(sum), min(min), max(max), "
    "sumMap(histogram), sumMap(categories) FROM {table} {final} "
    "GROUP BY ALL ORDER BY ALL"
)


def _at(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


def test_rollups_regroup_the_minute_rows_exactly(client, recorder) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = traffic(seed=6, color_weights_now=[0.2, 0.3, 0.5])
    ingest(client, recorder, rows)
    start, end = _at(END - 2 * 3600), _at(END)
    assert roll_up(client, FIVE_MINUTES, start, end) == 24  # every 5 minutes of 2 hours
    assert roll_up(client, ONE_HOUR, start, end) == 2
    minute = client.query(_TOTALS.format(table="ml_segment_aggregates", final="")).result_rows
    for table in (FIVE_MINUTES.table, ONE_HOUR.table):
        rolled = client.query(_TOTALS.format(table=table, final="FINAL")).result_rows
        assert rolled == minute, table
    buckets = client.query(
        f"SELECT count(), uniqExact(bucket_start) FROM {ONE_HOUR.table} FINAL "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.color'"
    ).result_rows
    assert buckets == [(2, 2)]


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
