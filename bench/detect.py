"""Detector benchmark: one scheduled run of every default detector on a day of data.

Fills a fresh embedded store with 24 hours of minute aggregates for one model
with SEGMENTS segments (10 dimensions) x QUANTITIES quantities (numeric
features and behaviour metrics) -- the rows the collector would have written,
generated in SQL so the setup takes seconds, not hours of simulated traffic --
then runs each default detector once for the latest window (as the scheduler
does at a cadence boundary) and prints the time of each and of the whole run.

Run: ``python bench/detect.py [--segments 1000] [--quantities 30] [--hours 24]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=1000)
    parser.add_argument("--quantities", type=int, default=30)
    parser.add_argument("--hours", type=int, default=24)
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


if __name__ == "__main__":
    main()
