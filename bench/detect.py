"""Detector benchmark: one scheduled run of every default detector on a day of data.

Fills a fresh embedded store with 24 hours of minute aggregates for one model
with SEGMENTS segments (10 dimensions) x QUANTITIES quantities (numeric
features and behaviour metrics) -- the rows the collector would have written,
generated in SQL so the setup takes seconds, not hours of simulated traffic --
then runs each default detector once for the latest window (as the scheduler
does at a cadence boundary: every detector due as one group, two queries at once
on two sessions of the store) and prints the time of each and of the whole run.

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
import gc
import importlib
import os
import resource
import tempfile
import threading
import time

import numpy as np

from segwatch.clickhouse.detection import load_manifest, run_detector_group
from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn

DIMENSIONS = 10
CALLS_PER_SEGMENT_MINUTE = 30  # 3,000 calls a minute over 100 values per dimension
METRICS = 3  # quantities 0..2 are metric.m<q>, the rest feature.f<q>
INJECTED_SECONDS = 900  # the changes fill the last 15 minutes: the scheduled run's window

# (detector, segment dimension, value, quantity) the scheduled run must report;
# the SQL below injects them (in values 3, 7, 11 and 17 of the first dimension).
INJECTED = (
    ("psi_drift", "feature.d0", "v7", "feature.f10"),  # its histogram moves up 8 keys (~17 %)
    ("metric_shift", "feature.d0", "v11", "metric.m1"),  # up 6 keys (~13 %)
    ("volume", "feature.d0", "v17", "calls"),  # a fifth of its calls come
    ("data_missing", "feature.d0", "v3", "feature.f20"),  # half its values go missing
)

# One row per (minute, segment, quantity); segment s is value s % values of
# dimension s / values. Every row is sampled on its own, as traffic varies: each of
# its 8 histogram buckets (keys 16600 + 4 i, values ~75 to ~118: key k stands for
# 1.0202^(k - 16384)) holds a Poisson count (a rounded normal of the same mean and
# variance, from rand()) around 30 calls times the bucket's binomial(7, 1/2) share;
# count, sum, sum of squares, min and max follow from the sampled buckets.
_GENERATE = """
INSERT INTO ml_segment_aggregates
WITH (k) -> exp((k - 16384) * log(1.01 / 0.99)) AS value,
     (mean, u1, u2) -> greatest(0., round(mean + sqrt(mean) * sqrt(-2 * log((u1 + 1) / 4294967297))
                                           * cos(2 * pi() * u2 / 4294967296))) AS poisson
SELECT
    'bench' AS model_name, '1' AS model_version, 'serving' AS model_stage,
    toDateTime({start:UInt32} + 60 * minute, 'UTC') AS bucket_start,
    concat('feature.d', toString(intDiv(segment, {values:UInt32}))) AS segment_dim,
    concat('v', toString(segment % {values:UInt32})) AS segment_value,
    if(q < {metrics:UInt32}, concat('metric.m', toString(q)), concat('feature.f', toString(q)))
        AS quantity,
    numeric + missing AS count, toUInt64(count) AS sampled, missing, numeric AS numeric_count,
    arraySum(arrayMap((k, c) -> c * value(k), keys, counts)) AS sum,
    arraySum(arrayMap((k, c) -> c * value(k) * value(k), keys, counts)) AS sum_sq,
    if(numeric > 0, value(arrayFirst((k, c) -> c > 0, keys, counts)), inf) AS min,
    if(numeric > 0, value(arrayLast((k, c) -> c > 0, keys, counts)), -inf) AS max,
    mapFromArrays(keys, counts) AS histogram,
    map() AS categories,
    [lower(hex(cityHash64(number)))] AS exemplar_trace_ids
FROM (
    SELECT number,
           intDiv(number, {per_minute:UInt32}) AS minute,
           intDiv(number % {per_minute:UInt32}, {quantities:UInt32}) AS segment,
           number % {quantities:UInt32} AS q,
           {start:UInt32} + 60 * minute >= {injected_from:UInt32} AND segment < {values:UInt32}
               AS injected,
           {calls:Float64} * if(injected AND segment = 17, 0.2, 1) AS expected,
           if(injected AND segment = 3 AND q = 20, 0.5, 0) AS missing_share,
           multiIf(injected AND segment = 7 AND q = 10, 8,
                   injected AND segment = 11 AND q = 1, 6, 0) AS shift,
           arrayMap(i -> toInt16(16600 + 4 * i + shift), range(8)) AS keys,
           arrayMap((share, i) -> poisson(expected * (1 - missing_share) * share,
                                          rand(number + i), rand32(number + i)),
                    [1, 7, 21, 35, 35, 21, 7, 1] / 128, range(8)) AS counts,
           arraySum(counts) AS numeric,
           poisson(expected * missing_share, rand(number + 8), rand32(number + 8)) AS missing
    FROM numbers({rows:UInt64})
)
"""

# The whole model: the sum of the first dimension's segments, minute by minute
# (so it holds the changes injected there).
_WHOLE_MODEL = """
INSERT INTO ml_segment_aggregates
SELECT model_name, model_version, model_stage, bucket_start, '__all__', '__all__', quantity,
       sum(count), sum(sampled), sum(missing), sum(numeric_count), sum(sum), sum(sum_sq),
       min(min), max(max), sumMap(histogram), sumMap(categories),
       groupUniqArrayArray(5)(exemplar_trace_ids)
FROM ml_segment_aggregates
WHERE segment_dim = 'feature.d0'
GROUP BY model_name, model_version, model_stage, bucket_start, quantity
"""


def fill(client, segments: int, quantities: int, hours: int, end: int) -> int:  # type: ignore[no-untyped-def]
    """Write ``hours`` of minute rows ending at ``end`` (epoch seconds); return how many."""
    per_minute = segments * quantities
    rows = per_minute * 60 * hours
    client.command(
        _GENERATE,
        parameters={
            "start": end - hours * 3600,
            "per_minute": per_minute,
            "values": segments // DIMENSIONS,
            "metrics": METRICS,
            "quantities": quantities,
            "calls": float(CALLS_PER_SEGMENT_MINUTE),
            "injected_from": end - INJECTED_SECONDS,
            "rows": rows,
        },
        settings={"max_insert_threads": 2},
    )
    client.command(_WHOLE_MODEL, settings={"max_insert_threads": 2})
    return rows + quantities * 60 * hours


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


class PeakRss:
    """The process's resident set, sampled every few milliseconds while in use: the
    embedded engine runs in this process, so its memory is counted too."""

    def __init__(self) -> None:
        self.start = self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = rss()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, rss())


def rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_store(path: str, args: argparse.Namespace, end: int):  # type: ignore[no-untyped-def]
    """A store holding the day ending at ``end`` (filled now, or by an earlier run with
    ``--store``: then its roll-ups and findings are dropped); returns it and its end."""
    client = open_client(parse_dsn(f"chdb://{path}"))
    apply_migrations(client)
    last = client.query("SELECT toUInt32(max(bucket_start)) FROM ml_segment_aggregates").result_rows
    if last and last[0][0]:
        for table in _RUN_TABLES:
            client.command(f"TRUNCATE TABLE IF EXISTS {table}")
        print(f"store: {path} (filled before), roll-ups and findings dropped")
        return client, int(last[0][0]) + 60
    started = time.perf_counter()
    rows = fill(client, args.segments, args.quantities, args.hours, end)
    print(
        f"store: {rows:,} minute aggregate rows ({args.hours} h x {args.segments:,} segments "
        f"and the whole model x {args.quantities} quantities) written in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return client, end


_RUN_TABLES = ("ml_segment_rollup_5m", "ml_segment_rollup_1h", "ml_anomalies",
               "ml_anomaly_events", "ml_incident_members")  # fmt: skip


Run = tuple[str, float, list[dict]]  # type: ignore[type-arg]
"""A detector's name, its run's seconds and its findings."""


def run_all(client, helper, at: int) -> tuple[float, float, list[Run]]:  # type: ignore[no-untyped-def]
    """Run every default detector for the window ending at ``at``, as the scheduler's turn
    does (a group: two queries at once, on ``client`` and ``helper``); return the seconds
    and CPU-seconds of the whole run and each detector's seconds (its run's, start to end:
    they overlap)."""
    started, started_cpu = time.perf_counter(), cpu_seconds()
    outcomes = run_detector_group(
        client, load_manifest(), dt.datetime.fromtimestamp(at, dt.timezone.utc), [helper]
    )
    runs = []
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome
        runs.append((outcome.detector, outcome.seconds, outcome.new_anomalies))
    return time.perf_counter() - started, cpu_seconds() - started_cpu, runs


def settle_merges(client, whose: str, most: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    """Wait, at most ``most`` seconds, for the engine's background merges, which run in this
    process (their CPU would count as a run's): the merges of a store just filled (43 M
    rows in a few parts: a minute or two of both cores), which a collector's store, merged
    as it is written, does not have; and those of the first run's roll-up parts, long done
    5 minutes later when the scheduled run comes."""
    started, started_cpu = time.perf_counter(), cpu_seconds()
    while time.perf_counter() - started < most:
        if not client.query("SELECT count() FROM system.merges").result_rows[0][0]:
            break
        time.sleep(0.2)  # a merge has no event to wait for
    print(
        f"{whose} background merges: {time.perf_counter() - started:.1f} s, "
        f"{cpu_seconds() - started_cpu:.2f} CPU-s (waited for, not timed as a run)"
    )


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread's: the embedded engine's too. On a
    machine others use, it is the steadier measure (wall time waits for their work)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def print_runs(runs: list[Run]) -> None:
    for name, seconds, rows in runs:
        print(f"  {name:24s} {seconds:6.2f} s  {len(rows)} findings")


def report_findings(runs: list[Run], which: str = "") -> None:
    """Print the run's findings and whether each injected change is among them."""
    found = {
        (row["detector"], row["segment_dim"], row["segment_value"], row["quantity"]): row["score"]
        for _, _, rows in runs
        for row in rows
    }
    print(f"{which}findings: {len(found)}")
    for (detector, dim, value, quantity), score in sorted(found.items()):
        injected = "injected" if (detector, dim, value, quantity) in INJECTED else ""
        print(f"  {detector:16s} {dim}={value:5s} {quantity:14s} score {score:8.3f} {injected}")
    missed = [change for change in INJECTED if change not in found]
    print(f"injected changes found: {len(INJECTED) - len(missed)} of {len(INJECTED)}"
          + (f" (missed: {missed})" if missed else ""))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=1000)
    parser.add_argument("--quantities", type=int, default=30)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--store", help="keep the filled store in this directory and reuse it "
                        "on the next run (its roll-ups and findings dropped)")  # fmt: skip
    parser.add_argument("--evidently-segments", type=int, default=20,
                        help="segments to time Evidently on (0: skip it)")  # fmt: skip
    args = parser.parse_args()
    now = int(time.time())
    with tempfile.TemporaryDirectory(prefix="segwatch-detect-") as tmp:
        path = args.store or f"{tmp}/store"
        client, end = open_store(path, args, now - now % 300)
        helper = open_client(parse_dsn(f"chdb://{path}"))  # the scheduler's second session
        # The first run after a restart: nothing rolled up yet (the run 5 minutes
        # before the scheduled one below).
        gc.collect()
        settle_merges(client, "the store's own", most=600)
        print(f"load average before the runs: {os.getloadavg()[0]:.1f} (this machine has "
              f"{os.cpu_count()} cores)")  # fmt: skip
        with PeakRss() as first_memory:
            first, first_cpu, runs = run_all(client, helper, end - 300)
        growth = (first_memory.peak - first_memory.start) / MIB
        print(f"first run (rolls up the history it reads): {first:.2f} s, {first_cpu:.2f} CPU-s "
              f"(target: at most 10 s, {first / 10:.2f}x); RSS peak {growth:+.0f} MiB")  # fmt: skip
        print_runs(runs)
        report_findings(runs, "the first run's ")  # its window holds 10 of the changes' 15 minutes
        settle_merges(client, "the first run's")
        gc.collect()
        with PeakRss() as memory:
            total, total_cpu, runs = run_all(client, helper, end)
        steady = memory.start
        print(f"one scheduled run of every default detector: {total:.2f} s, {total_cpu:.2f} CPU-s "
              f"(target: at most 2 s, {total / 2:.2f}x)")  # fmt: skip
        print_runs(runs)
        print(f"RSS: {steady / MIB:.0f} MiB before the run, peak {memory.peak / MIB:.0f} MiB "
              f"({(memory.peak - steady) / MIB:+.0f} MiB; target: at most +500 MiB)")  # fmt: skip
        report_findings(runs)
        helper.close()
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


MIB = 1 << 20

if __name__ == "__main__":
    main()
