"""Roll-ups without histograms and categories: marked, rolled up again when asked, never read.

Older buckets are rolled up without their maps (``maps_from``; see
segwatch.clickhouse.rollups): their numbers must be exactly the minute rows', the
whole model's rows must keep their maps, a detector that reads a row's maps must
never see one without them, and its findings must be those of a store rolled up
with every map: also when another run rolled its buckets up again without their
maps between its roll-up and its query, and when the session disables short-circuit
evaluation.
"""

from __future__ import annotations

import datetime as dt
import time
from importlib import resources
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from shop_traffic import END, ingest, traffic

from segwatch.clickhouse import detection, rollups
from segwatch.clickhouse.detection import load_manifest, run_detector
from segwatch.clickhouse.migrate import apply_migrations, load_migrations
from segwatch.clickhouse.rollups import FIVE_MINUTES, ONE_HOUR, roll_up
from segwatch.clickhouse.store import (
    DETECTOR_SETTINGS,
    detector_query_settings,
    open_client,
    parse_dsn,
)

_NUMBERS = (
    "SELECT segment_dim, segment_value, quantity, toStartOfHour(bucket_start) AS hour, "
    "sum(count), sum(sampled), sum(missing), sum(numeric_count), sum(sum), min(min), max(max) "
    "FROM {table} {final} GROUP BY ALL ORDER BY ALL"
)
_MAPS = (
    "SELECT segment_dim, segment_value, quantity, toStartOfHour(bucket_start) AS hour, "
    "sumMap(histogram), sumMap(categories) FROM {table} {final} {where} "
    "GROUP BY ALL ORDER BY ALL"
)


_SHIFT = (END - int(time.time())) // 86400 * 86400 + 2 * 86400
PAST_END = END - _SHIFT
"""shop_traffic's END moved back whole days to one or two days before the wall clock,
which a detector run's roll-ups tell settled buckets by: traffic ending at PAST_END has
settled, so the runner rolls the buckets before the maps a detector reads up without
them (shop_traffic's own END lies ahead of the clock: nothing there has settled)."""


def _past(rows: list[tuple[int, dict[str, str]]]) -> list[tuple[int, dict[str, str]]]:
    return [(at - _SHIFT, features) for at, features in rows]


def _at(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


def _marks(client, rollup) -> dict[tuple[str, int], int]:  # type: ignore[no-untyped-def]
    """How many FINAL rows of the roll-up have (whole model or not, maps)."""
    rows = client.query(
        f"SELECT segment_dim = '__all__', maps, count() FROM {rollup.table} FINAL GROUP BY ALL"
    ).result_rows
    return {("__all__" if whole else "segments", maps): n for whole, maps, n in rows}


def test_without_maps_numbers_are_exact_and_the_whole_model_keeps_maps(client, recorder) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = traffic(seed=6, color_weights_now=[0.2, 0.3, 0.5])
    ingest(client, recorder, rows)
    start, end, settled = _at(END - 3600), _at(END), _at(END + 600)
    assert roll_up(client, FIVE_MINUTES, start, end, now=settled, maps_from=end) == 12
    assert roll_up(client, ONE_HOUR, start, end, now=settled, maps_from=end) == 1
    minute = "WHERE bucket_start >= {start:DateTime('UTC')}"
    bounds = {"start": start.strftime("%Y-%m-%d %H:%M:%S")}
    numbers = client.query(
        _NUMBERS.format(table="ml_segment_aggregates", final=minute), parameters=bounds
    ).result_rows
    whole_maps = client.query(
        _MAPS.format(table="ml_segment_aggregates", final="",
                     where=minute + " AND segment_dim = '__all__'"), parameters=bounds
    ).result_rows  # fmt: skip
    assert whole_maps and any(row[5] for row in whole_maps)  # categories, color and size
    for rollup in (FIVE_MINUTES, ONE_HOUR):
        rolled = client.query(_NUMBERS.format(table=rollup.table, final="FINAL")).result_rows
        assert rolled == numbers, rollup.table
        marks = _marks(client, rollup)
        assert set(marks) == {("__all__", 1), ("segments", 0)}, rollup.table
        assert (
            client.query(
                _MAPS.format(
                    table=rollup.table, final="FINAL", where="WHERE segment_dim = '__all__'"
                )
            ).result_rows
            == whole_maps
        ), rollup.table
        # the segments' rows hold empty maps, marked: no reader takes them for "no values"
        assert client.query(
            f"SELECT countIf(length(histogram) + length(categories) > 0) FROM {rollup.table} FINAL "
            "WHERE maps = 0"
        ).result_rows == [(0,)]


def test_maps_asked_for_later_are_rolled_up_then_and_never_lost(client, recorder) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = traffic(seed=7, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows)
    start, end, settled = _at(END - 3600), _at(END), _at(END + 600)
    assert roll_up(client, FIVE_MINUTES, start, end, now=settled, maps_from=end) == 12
    # The last 15 minutes with maps: those three buckets again, once.
    window = _at(END - 900)
    assert roll_up(client, FIVE_MINUTES, start, end, now=settled, maps_from=window) == 3
    assert roll_up(client, FIVE_MINUTES, start, end, now=settled, maps_from=window) == 0
    # Asked without maps again, buckets that have them keep them (nothing to roll up).
    assert roll_up(client, FIVE_MINUTES, start, end, now=settled, maps_from=end) == 0
    assert _marks(client, FIVE_MINUTES)[("segments", 0)] > 0
    # The whole hour with maps: the nine others; then the hour from them, with maps.
    assert roll_up(client, FIVE_MINUTES, start, end, now=settled, maps_from=start) == 9
    assert roll_up(client, ONE_HOUR, start, end, now=settled, maps_from=start) == 1
    minute = client.query(
        _MAPS.format(table="ml_segment_aggregates", final="",
                     where="WHERE bucket_start >= {start:DateTime('UTC')}"),
        parameters={"start": start.strftime("%Y-%m-%d %H:%M:%S")},
    ).result_rows  # fmt: skip
    for rollup in (FIVE_MINUTES, ONE_HOUR):
        assert {maps for _, maps in _marks(client, rollup)} == {1}, rollup.table
        rolled = client.query(_MAPS.format(table=rollup.table, final="FINAL", where="")).result_rows
        assert rolled == minute, rollup.table
    # An hour rolled up from 5-minute rows without maps has none; asked with maps, it is
    # rolled up again from the minute rows (its 5-minute rows have none), exactly.
    client.command(f"TRUNCATE TABLE {ONE_HOUR.table}")
    client.command(f"TRUNCATE TABLE {FIVE_MINUTES.table}")
    assert roll_up(client, FIVE_MINUTES, start, end, now=settled, maps_from=end) == 12
    assert roll_up(client, ONE_HOUR, start, end, now=settled, maps_from=end) == 1
    assert _marks(client, ONE_HOUR)[("segments", 0)] > 0
    assert roll_up(client, ONE_HOUR, start, end, now=settled, maps_from=start) == 1  # again
    assert {maps for _, maps in _marks(client, ONE_HOUR)} == {1}
    rolled = client.query(_MAPS.format(table=ONE_HOUR.table, final="FINAL", where="")).result_rows
    assert rolled == minute
    assert {maps for _, maps in _marks(client, FIVE_MINUTES)} == {0, 1}  # left as they were
    assert roll_up(client, ONE_HOUR, start, end, now=settled, maps_from=start) == 0


def test_an_hour_comes_from_its_five_minute_buckets_only_when_all_are_held(
    client, recorder, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A first run's baseline hours are rolled up from the minute rows (their 5-minute
    buckets are not rolled up for them); an hour whose twelve 5-minute buckets are held
    comes from those, at a twelfth of the rows; both give the same hour."""
    rows, _, _ = traffic(seed=11, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows)
    start, end, settled = _at(END - 3600), _at(END), _at(END + 600)
    sources: list[str] = []
    command = type(client).command

    def spy(self, cmd, *args, **kwargs):  # type: ignore[no-untyped-def]
        if cmd.lstrip().startswith(f"INSERT INTO {ONE_HOUR.table}"):
            sources.append(cmd.split("FROM ")[1].split()[0])
        return command(self, cmd, *args, **kwargs)

    monkeypatch.setattr(type(client), "command", spy)
    assert roll_up(client, ONE_HOUR, start, end, now=settled) == 1
    from_minutes = client.query(
        _MAPS.format(table=ONE_HOUR.table, final="FINAL", where="")
    ).result_rows
    assert sources == ["ml_segment_aggregates"]
    # Eleven of its twelve 5-minute buckets held: still from the minute rows.
    client.command(f"TRUNCATE TABLE {ONE_HOUR.table}")
    assert roll_up(client, FIVE_MINUTES, start, _at(END - 300), now=settled) == 11
    assert roll_up(client, ONE_HOUR, start, end, now=settled) == 1
    assert sources[-1] == "ml_segment_aggregates"
    # All twelve: from them.
    client.command(f"TRUNCATE TABLE {ONE_HOUR.table}")
    assert roll_up(client, FIVE_MINUTES, start, end, now=settled) == 1
    assert roll_up(client, ONE_HOUR, start, end, now=settled) == 1
    assert sources[-1] == FIVE_MINUTES.table
    assert (
        client.query(_MAPS.format(table=ONE_HOUR.table, final="FINAL", where="")).result_rows
        == from_minutes
    )


def test_a_bucket_rolled_up_with_maps_unsettled_keeps_them_rolled_again(client, recorder) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = traffic(seed=8, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows)
    start, end = _at(END - 600), _at(END)
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(END + 10)) == 2  # the last unsettled
    # Settled: rolled again, by a run that asks for no maps; the maps stay.
    assert roll_up(client, FIVE_MINUTES, start, end, now=_at(END + 300), maps_from=end) == 1
    assert {maps for _, maps in _marks(client, FIVE_MINUTES)} == {1}


def test_an_hour_that_began_before_the_range_is_not_rolled_up(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """A run's baseline may start mid-hour (a first run, after a restart): the 5-minute
    buckets before it are not rolled up, so that hour must not be (its roll-up would hold
    part of its calls, and stand for good)."""
    rows, _, _ = traffic(seed=9, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows)
    start, end = _at(END - 3600 - 1800), _at(END)
    assert roll_up(client, FIVE_MINUTES, _at(END - 3600 - 900), end) == 15
    assert roll_up(client, ONE_HOUR, _at(END - 3600 - 900), end) == 1  # [END - 1 h, END)
    held = client.query(f"SELECT DISTINCT bucket_start FROM {ONE_HOUR.table}").result_rows
    assert held == [(_at(END - 3600).replace(tzinfo=None),)]
    assert roll_up(client, FIVE_MINUTES, start, end) == 0  # no calls before END - 75 min
    (calls,) = client.query(
        f"SELECT sum(count) FROM {ONE_HOUR.table} FINAL "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.color'"
    ).result_rows[0]
    assert calls == sum(1 for at, _ in rows if END - 3600 <= at < END)


def _findings(client, names: tuple[str, ...]) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    specs = [spec for spec in load_manifest() if spec.name in names]
    runs = [run_detector(client, spec, _at(PAST_END)) for spec in specs]
    return sorted(
        (row["detector"], row["segment_dim"], row["segment_value"], row["quantity"],
         round(row["score"], 9), row["details"])
        for run in runs for row in run.new_anomalies
    )  # fmt: skip


def _forget_runs(client) -> None:  # type: ignore[no-untyped-def]
    """Drop what detector runs stored and rolled up: the next runs start afresh."""
    for table in ("ml_anomalies", "ml_anomaly_events", "ml_incident_members",
                  FIVE_MINUTES.table, ONE_HOUR.table):  # fmt: skip
        client.command(f"TRUNCATE TABLE {table}")


def _shifted_colors(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """The color mix shifts in the last 15 minutes before PAST_END, and a color never
    seen before comes: psi_drift and data_quality (data_categories) find something."""
    rows, _, _ = traffic(seed=3, color_weights_now=[0.2, 0.3, 0.5])
    rows += [(at, {**features, "color": "violet"}) for at, features in rows[-100:-40]]
    ingest(client, recorder, _past(rows))


def test_detectors_find_the_same_on_history_rolled_up_without_maps(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """psi_drift and data_quality (categories) find the same whether the history was
    rolled up without maps (as a first run's older buckets are) or not; and a detector's
    query run on rows without the maps it reads stops, never reading them as empty."""
    _shifted_colors(client, recorder)
    names = ("psi_drift", "data_quality")
    reference = _findings(client, names)  # rolled up by the runs, with the maps they read
    assert {row[0] for row in reference} >= {"psi_drift", "data_categories"}
    _forget_runs(client)
    start, end = _at(PAST_END - 7 * 3600), _at(PAST_END)
    roll_up(client, FIVE_MINUTES, start, end, maps_from=end)
    roll_up(client, ONE_HOUR, start, end, maps_from=end)
    psi = next(spec for spec in load_manifest() if spec.name == "psi_drift")
    parameters = {
        **psi.parameters,
        "detector": psi.name,
        **{k: v.strftime("%Y-%m-%d %H:%M:%S") for k, v in psi.windows(end).items()},
    }
    with pytest.raises(DatabaseError, match="without its histogram and categories"):
        client.query(psi.sql, parameters=parameters)
    assert _findings(client, names) == reference


def _buckets_maps(client) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """Per 5-minute bucket (seconds before END), whether every segment's row has its maps."""
    rows = client.query(
        f"SELECT toUnixTimestamp(bucket_start), min(maps) FROM {FIVE_MINUTES.table} FINAL "
        "WHERE segment_dim != '__all__' GROUP BY ALL ORDER BY ALL"
    ).result_rows
    return [(END - bucket, maps) for bucket, maps in rows]


def _nothing_held(*args: Any) -> tuple[dict[int, tuple[bool, bool]], None]:
    """rollups._held_buckets as another run saw it, having read what is held before this
    run's roll-up landed (nothing yet): it rolls up every bucket, stamped with its own,
    later clock."""
    return {}, None


def test_buckets_not_settled_are_rolled_up_with_their_maps(client, recorder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = traffic(seed=8, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows)
    start, end, unsettled = _at(END - 900), _at(END), _at(END + 10)
    assert roll_up(client, FIVE_MINUTES, start, end, now=unsettled, maps_from=end) == 3
    assert _buckets_maps(client) == [(900, 0), (600, 0), (300, 1)]  # the last ends at END
    # A run asking for every map, then one without (a volume run that read before the
    # first's roll-up landed) inserting later: the bucket not settled keeps its maps.
    assert roll_up(client, FIVE_MINUTES, start, end, now=unsettled, maps_from=start) == 2
    assert _buckets_maps(client) == [(900, 1), (600, 1), (300, 1)]
    with monkeypatch.context() as patched:
        patched.setattr(rollups, "_held_buckets", _nothing_held)
        assert roll_up(client, FIVE_MINUTES, start, end, now=_at(END + 20), maps_from=end) == 3
    assert _buckets_maps(client) == [(900, 0), (600, 0), (300, 1)]


def test_maps_lost_to_another_run_are_rolled_up_again(client, recorder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two runs at once (two collectors, or the scheduler beside POST /api/v1/detect):
    psi_drift rolls its buckets up with their maps; a volume run that read what was held
    before that roll-up landed rolls the same buckets up without maps, stamped later,
    before psi_drift's query reads them. psi_drift rolls them up again and finds what it
    finds undisturbed."""
    _shifted_colors(client, recorder)
    reference = _findings(client, ("psi_drift",))
    assert {row[0] for row in reference} == {"psi_drift"}
    _forget_runs(client)
    roll_up_for = detection.roll_up_for
    clobbered: list[dict[tuple[str, int], int]] = []

    def then_another_run(client, sql, maps, windows, turns=None) -> None:  # type: ignore[no-untyped-def]
        roll_up_for(client, sql, maps, windows, turns)
        if clobbered:
            return  # once
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
        with monkeypatch.context() as patched:
            patched.setattr(rollups, "_held_buckets", _nothing_held)
            for rollup in (FIVE_MINUTES, ONE_HOUR):
                roll_up(client, rollup, windows["baseline_start"], windows["window_end"],
                        now=later, maps_from=windows["window_end"])  # fmt: skip
        clobbered.append(_marks(client, FIVE_MINUTES))

    monkeypatch.setattr(detection, "roll_up_for", then_another_run)
    assert _findings(client, ("psi_drift",)) == reference
    assert clobbered and clobbered[0][("segments", 0)] > 0  # the race took place
    assert {maps for _, maps in _marks(client, FIVE_MINUTES)} == {1}  # the maps again


def test_data_quality_where_short_circuits_are_disabled(client, recorder, store_dsn) -> None:  # type: ignore[no-untyped-def]
    """data_quality checks a row's maps only where it reads them (`is_current AND
    sw_maps_read(maps)`): its baseline's rows, rolled up without maps, are never checked,
    under a session (a server profile) that says short_circuit_function_evaluation =
    'disable' too."""
    _shifted_colors(client, recorder)
    reference = _findings(client, ("data_quality",))
    assert "data_categories" in {row[0] for row in reference}
    _forget_runs(client)
    disabled = open_client(parse_dsn(store_dsn), short_circuit_function_evaluation="disable")
    try:
        setting = "SELECT getSetting('short_circuit_function_evaluation')"
        assert disabled.query(setting).result_rows == [("disable",)]
        assert _findings(disabled, ("data_quality",)) == reference
        assert _marks(disabled, FIVE_MINUTES)[("segments", 0)] > 0  # the baseline's rows
    finally:
        disabled.close()


def test_an_upgraded_store_keeps_its_rolled_up_maps(bare_client) -> None:  # type: ignore[no-untyped-def]
    shipped = load_migrations()
    maps = next(m for m in shipped if m.name == "0016_rollup_maps.sql")
    apply_migrations(bare_client, shipped[: maps.version - 1])
    for rollup in (FIVE_MINUTES, ONE_HOUR):
        bare_client.command(
            f"INSERT INTO {rollup.table} (model_name, bucket_start, segment_dim, segment_value, "
            "quantity, count, sampled, histogram, rolled_at) VALUES ('m', '2026-11-26 10:00:00', "
            "'feature.country', 'BR', 'output.score', 1, 1, map(16400, 1.), now64(3))"
        )
    apply_migrations(bare_client)
    for rollup in (FIVE_MINUTES, ONE_HOUR):
        assert bare_client.query(
            f"SELECT maps, histogram FROM {rollup.table} FINAL"
        ).result_rows == [(1, {16400: 1.0})], rollup.table


@pytest.fixture
def bare_client(store_dsn: str):  # type: ignore[no-untyped-def]
    from segwatch.clickhouse.store import open_client, parse_dsn

    opened = open_client(parse_dsn(store_dsn))
    yield opened
    opened.close()


def test_buckets_without_calls_cost_no_insert(client, recorder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A range before the store's first call (a first run's baseline, a backfilled file's)
    rolls up nothing, and issues no insert: nothing is held for those buckets, so every
    run asked again, and each insert of nothing cost a query's planning."""
    rows, _, _ = traffic(seed=10, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows)
    inserts: list[str] = []
    command = type(client).command

    def spy(self, cmd, *args, **kwargs):  # type: ignore[no-untyped-def]
        inserts.extend([cmd] if cmd.lstrip().startswith("INSERT") else [])
        return command(self, cmd, *args, **kwargs)

    monkeypatch.setattr(type(client), "command", spy)
    before = _at(END - 75 * 60)  # the first call's bucket
    assert roll_up(client, FIVE_MINUTES, _at(END - 4 * 3600), before) == 0
    assert roll_up(client, ONE_HOUR, _at(END - 4 * 3600), before) == 0
    assert inserts == []
    # Across the first call: only the three buckets that hold calls (ten minutes an insert).
    assert roll_up(client, FIVE_MINUTES, _at(END - 3 * 3600), _at(END - 60 * 60)) == 3
    assert len(inserts) == -(-3 * 300 // rollups._INSERT_SECONDS)


@pytest.mark.parametrize("minutes_after_end", [0, 5, 45, 60])
def test_a_run_reads_each_bucket_of_its_range_once(client, recorder, minutes_after_end) -> None:  # type: ignore[no-untyped-def]
    """Whatever the alignment of its baseline, what a detector reads through rolled_up.sql
    (whole hours from the 1-hour roll-up, the rest from the 5-minute one) is every minute
    row of its window and baseline once, after the runner's roll-up; and a baseline's whole
    hours get no 5-minute buckets of their own."""
    rows, _, _ = traffic(seed=12, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows)
    spec = next(s for s in load_manifest() if s.name == "data_quality")  # a 6-hour baseline
    windows = spec.windows(_at(END + 60 * minutes_after_end))
    rollups.roll_up_for(client, spec.sql, spec.maps, windows)
    fragment = (
        resources.files("segwatch.clickhouse.detectors").joinpath("rolled_up.sql").read_text()
    )
    parameters = {k: v.strftime("%Y-%m-%d %H:%M:%S") for k, v in windows.items()}
    where = "segment_dim = '__all__' AND quantity = 'feature.color'"
    read = client.query(
        "WITH "
        + fragment.rstrip().rstrip(",")
        + f" SELECT sum(count) FROM rolled_up WHERE {where}",
        parameters=parameters,
    ).result_rows[0][0]
    in_range = sum(
        1
        for at, _ in rows
        if windows["window_start"].timestamp() <= at < windows["window_end"].timestamp()
        or windows["baseline_start"].timestamp() <= at < windows["baseline_end"].timestamp()
    )
    assert read == in_range
    hours = rollups._whole_hours(windows["baseline_start"], windows["baseline_end"])
    assert hours is not None
    inside = client.query(
        f"SELECT count() FROM {FIVE_MINUTES.table} "
        "WHERE bucket_start >= {first:DateTime('UTC')} AND bucket_start < {last:DateTime('UTC')}",
        parameters={"first": hours[0].strftime("%Y-%m-%d %H:%M:%S"),
                    "last": hours[1].strftime("%Y-%m-%d %H:%M:%S")},
    ).result_rows[0][0]  # fmt: skip
    assert inside == 0


def test_faster_planning_only_where_the_server_knows_its_setting(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """optimize_and_compare_chain is ClickHouse 25.2's: a detector's query sends it only to a
    server that lists it (an older one refuses a setting it does not know)."""
    assert detector_query_settings(client)["optimize_and_compare_chain"] == 0
    monkeypatch.delitem(client.server_settings, "optimize_and_compare_chain")
    older = detector_query_settings(client)
    assert "optimize_and_compare_chain" not in older
    assert older == DETECTOR_SETTINGS
