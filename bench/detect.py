"""Detector benchmark: one scheduled run of every default detector on a day of data.

Fills a fresh embedded store with 24 hours of minute aggregates for one model
with SEGMENTS segments (10 dimensions) x QUANTITIES quantities (numeric
features and behaviour metrics) -- the rows the collector would have written,
generated in SQL so the setup takes seconds, not hours of simulated traffic --
then runs each default detector once for the latest window (as the scheduler
does at a cadence boundary) and prints the time of each and of the whole run.

Beside it, Evidently's drift preset on the same window and baseline, looped over
the segments: per segment a DataFrame of the calls the aggregates stand for
(30 calls a minute, QUANTITIES columns of values around 100, sd 5), timed on
``--evidently-segments`` of them and scaled to all. Evidently is not a
dependency (it needs pandas < 3): run the script from an environment that has
it (see bench/evidently_side_by_side.py) or the comparison is skipped.

Run: ``python bench/detect.py [--segments 1000] [--quantities 30] [--hours 24]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import tempfile
import time

import numpy as np

from segwatch.clickhouse.detection import load_manifest, run_detector
from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn

DIMENSIONS = 10
CALLS_PER_SEGMENT_MINUTE = 30  # 3,000 calls a minute over 100 values per dimension

# One row per (minute, segment, quantity); segment 0 is the whole model. Values
# around 100 with a little noise; histograms of 8 buckets around log-key 16616.
_GENERATE = """
INSERT INTO ml_segment_aggregates
SELECT
    'bench' AS model_name, '1' AS model_version, 'serving' AS model_stage,
    toDateTime({start:UInt32} + 60 * intDiv(number, {per_minute:UInt32}), 'UTC') AS bucket_start,
    if(segment = 0, '__all__', concat('feature.d', toString(intDiv(segment - 1, {values:UInt32}))))
        AS segment_dim,
    if(segment = 0, '__all__', concat('v', toString((segment - 1) % {values:UInt32})))
        AS segment_value,
    if(q < {metrics:UInt32}, concat('metric.m', toString(q)), concat('feature.f', toString(q)))
        AS quantity,
    toFloat64(calls) AS count, calls AS sampled, 0. AS missing, toFloat64(calls) AS numeric_count,
    calls * mean AS sum, calls * (mean * mean + 25) AS sum_sq, 70. AS min, 135. AS max,
    mapFromArrays(arrayMap(i -> toInt16(16600 + 4 * i), range(8)),
                  arrayMap(i -> calls / 8, range(8))) AS histogram,
    map() AS categories,
    [lower(hex(cityHash64(number)))] AS exemplar_trace_ids
FROM (
    SELECT number,
           intDiv(number % {per_minute:UInt32}, {quantities:UInt32}) AS segment,
           number % {quantities:UInt32} AS q,
           toUInt64(if(segment = 0, {model_calls:UInt32}, {segment_calls:UInt32})
                    + rand(number) % 7) AS calls,
           100 + (rand64(number) % 1000) / 1000 AS mean
    FROM numbers({rows:UInt64})
)
"""


def fill(client, segments: int, quantities: int, hours: int, end: int) -> int:  # type: ignore[no-untyped-def]
    per_minute = (segments + 1) * quantities
    rows = per_minute * 60 * hours
    values = segments // DIMENSIONS
    client.command(
        _GENERATE,
        parameters={
            "start": end - hours * 3600,
            "per_minute": per_minute,
            "values": values,
            "metrics": 3,
            "quantities": quantities,
            "model_calls": CALLS_PER_SEGMENT_MINUTE * values,
            "segment_calls": CALLS_PER_SEGMENT_MINUTE,
            "rows": rows,
        },
        settings={"max_insert_threads": 2},
    )
    return rows


def time_evidently(segments: int, quantities: int, window: int, baseline: int) -> float | None:
    """Seconds Evidently's DataDriftPreset takes per segment on this data (None: no Evidently)."""
    try:
        pd = importlib.import_module("pandas")
        report_class = importlib.import_module("evidently").Report
        preset = importlib.import_module("evidently.presets").DataDriftPreset
    except ImportError as exc:
        print(f"Evidently not importable here ({exc}): comparison skipped")
        return None
    rng = np.random.default_rng(1)
    columns = [f"f{q}" for q in range(quantities)]
    rows = (CALLS_PER_SEGMENT_MINUTE * baseline // 60, CALLS_PER_SEGMENT_MINUTE * window // 60)
    frames = [
        (pd.DataFrame(rng.normal(100, 5, (rows[0], quantities)), columns=columns),
         pd.DataFrame(rng.normal(100, 5, (rows[1], quantities)), columns=columns))
        for _ in range(segments)
    ]  # fmt: skip
    started = time.perf_counter()
    flagged = 0
    for reference, current in frames:
        snapshot = report_class([preset()]).run(current, reference).dict()
        flagged += int(snapshot["metrics"][0]["value"]["count"])  # DriftedColumnsCount
    seconds = (time.perf_counter() - started) / segments
    print(
        f"Evidently DataDriftPreset: {seconds:.2f} s per segment ({rows[0]} reference and "
        f"{rows[1]} current rows x {quantities} columns, {segments} segments timed); it flagged "
        f"{flagged} of {segments * quantities} columns as drifted on data without drift"
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=1000)
    parser.add_argument("--quantities", type=int, default=30)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--evidently-segments", type=int, default=20,
                        help="segments to time Evidently on (0: skip it)")  # fmt: skip
    args = parser.parse_args()
    now = int(time.time())
    end = now - now % 300
    with tempfile.TemporaryDirectory(prefix="segwatch-detect-") as tmp:
        client = open_client(parse_dsn(f"chdb://{tmp}/store"))
        apply_migrations(client)
        started = time.perf_counter()
        rows = fill(client, args.segments, args.quantities, args.hours, end)
        print(
            f"store: {rows:,} minute aggregate rows ({args.hours} h x {args.segments:,} segments "
            f"x {args.quantities} quantities) written in {time.perf_counter() - started:.1f} s"
        )
        # The scheduler ran every detector 5 minutes ago: those runs rolled up the
        # buckets they read. Time the next one (which rolls up what is new).
        started = time.perf_counter()
        for spec in load_manifest():
            run_detector(client, spec, dt.datetime.fromtimestamp(end - 300, dt.timezone.utc))
        print(
            f"previous scheduled run (rolls up the history once): "
            f"{time.perf_counter() - started:.1f} s"
        )
        at = dt.datetime.fromtimestamp(end, dt.timezone.utc)
        total = 0.0
        for spec in load_manifest():
            run = run_detector(client, spec, at)
            total += run.seconds
            print(f"  {spec.name:24s} {run.seconds:6.2f} s  {len(run.new_anomalies)} findings")
        print(f"one scheduled run of every default detector: {total:.2f} s (target: at most 2 s)")
        client.close()
    psi = next(s for s in load_manifest() if s.name == "psi_drift")
    per_segment = args.evidently_segments and time_evidently(
        args.evidently_segments, args.quantities, psi.window, psi.baseline
    )
    if per_segment:
        loop = per_segment * (args.segments + 1)  # every segment and the whole model
        print(
            f"Evidently looped over the {args.segments:,} segments and the whole model: "
            f"{loop:.0f} s (scaled); segwatch's run of every detector is {loop / total:.0f}x faster"
        )


if __name__ == "__main__":
    main()
