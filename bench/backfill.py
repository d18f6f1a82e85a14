"""Backfill benchmark: logged predictions into the store, beside pandas' own read of the file.

Two measurements, each on a fresh embedded store (``chdb://DIR``) in this process:

1. ``throughput``: a CSV of ``--rows`` calls (default 500,000) of 20 numeric and
   5 category features over one hour, read by ``pandas.read_csv`` (the
   baseline, measured in the same run on the same file), then backfilled with
   ``storage.raw_calls`` off (aggregates only) and on (aggregates and raw
   calls). This process is pinned to one core (``--core``) before the engine
   starts, so its threads share that core: rows/s is "on one core" (the
   backfill's insert thread shares it too; it sums quantities on one thread).
   Printed: seconds, rows/s, the process's CPU seconds (user + system, engine
   threads included), each time as a ratio to pandas' read, the calls per
   CPU-second, and whether those with raw calls (what spans would write) reach
   the target, 150,000. A backfill
   of the file's first 2,000 rows runs first, untimed (imports, the engine's
   first queries).
2. ``scenario`` (issue 18's target): 1,000,000 calls, 29 columns (a time, a
   ``segment`` of 50 values, 4 more categories, 20 numeric features, the
   outputs ``score`` and ``label``, the metric ``latency``); half reference (an
   hour), half current (the next 15 minutes); in the current half two
   segment x feature cells drift (``segment=s07``: ``f03`` doubles;
   ``segment=s31``: ``f11`` shifts by two standard deviations). The score
   depends on ``f00``-``f02`` only, so that a finding outside the two cells is a
   false one, not the model's output following its input. Timed: the backfill
   (read, aggregate, insert) and one run of every default detector over the
   current window (``detect --from/--to`` over the window that ends with the
   file), both cores free (the backfill inserts on a thread of its own and sums
   a chunk's quantities on two), with ``segments.top_k: 50`` (every segment its
   own; the default keeps a field's 20 most frequent values). Printed: pandas'
   read of the file alone (for reference: the backfill reads it again), each
   phase's seconds and CPU seconds, the total against the 10 s target, and
   every finding, and how many cores each phase kept busy (its CPU seconds per
   second: on a busy machine its wall time says little; its CPU seconds over the
   two cores bound what a quiet one could give). Each part prints the machine's
   load average beside it.

Run: ``python bench/backfill.py [--rows 500000] [--core 0] [--data DIR]
[--no-scenario] [--no-throughput]``. Files are written to ``--data`` (default
a temporary directory) and reused when they are there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

HOUR = 3600
SCENARIO_ROWS = 1_000_000
DRIFTED = (("s07", "f03"), ("s31", "f11"))
"""The scenario's injected cells: (segment, feature)."""
TARGET_PER_CPU_SECOND = 150_000
"""Issue 18's throughput target: rows backfilled per second on one core."""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _iso(seconds: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s"), "Z")


def _write(path: Path, columns: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.csv as pc

    pc.write_csv(pa.table(columns), str(path), pc.WriteOptions(quoting_style="none"))


def throughput_file(path: Path, rows: int, start: int) -> None:
    """20 numeric and 5 category features over one hour."""
    rng = np.random.default_rng(1)
    columns: dict[str, np.ndarray] = {"ts": _iso(start + np.sort(rng.integers(0, HOUR, rows)))}
    for i in range(20):
        columns[f"f{i:02d}"] = np.round(rng.lognormal(2, 1, rows), 3)
    for i, size in enumerate((40, 8, 8, 5, 3)):
        columns[f"c{i}"] = np.array([f"v{j}" for j in range(size)])[rng.integers(0, size, rows)]
    _write(path, columns)


def scenario_file(path: Path, start: int) -> None:
    """The issue's 1 M-row file: an hour of reference, 15 minutes of current, two cells drift."""
    rng = np.random.default_rng(18)
    half = SCENARIO_ROWS // 2
    seconds = np.concatenate([start + rng.integers(0, HOUR, half),
                              start + HOUR + rng.integers(0, HOUR // 4, half)])  # fmt: skip
    seconds.sort()
    current = seconds >= start + HOUR
    segment = rng.integers(0, 50, SCENARIO_ROWS)
    columns: dict[str, np.ndarray] = {"ts": _iso(seconds)}
    columns["segment"] = np.array([f"s{j:02d}" for j in range(50)])[segment]
    for i, size in enumerate((6, 4, 12, 3), start=1):
        columns[f"c{i}"] = np.array([f"v{j}" for j in range(size)])[
            rng.integers(0, size, SCENARIO_ROWS)
        ]
    for i in range(20):
        values = rng.normal(50 + i, 10, SCENARIO_ROWS)
        for cell_segment, feature in DRIFTED:
            if feature == f"f{i:02d}":
                cell = current & (columns["segment"] == cell_segment)
                values[cell] = values[cell] * 2 if feature == "f03" else values[cell] + 20
        columns[f"f{i:02d}"] = np.round(values, 3)
    logit = (columns["f00"] - 50) / 10 + (columns["f01"] - 51) / 10 - (columns["f02"] - 52) / 10
    score = 1 / (1 + np.exp(-logit))
    columns["score"] = np.round(score, 4)
    columns["label"] = np.where(score > 0.5, "fraud", "ok")
    columns["latency"] = np.round(rng.gamma(4, 5, SCENARIO_ROWS), 2)
    _write(path, columns)


@contextmanager
def fresh_store(directory: Path) -> Iterator[Any]:
    from segwatch.clickhouse.migrate import apply_migrations
    from segwatch.clickhouse.store import open_client, parse_dsn

    shutil.rmtree(directory, ignore_errors=True)
    client = open_client(parse_dsn(f"chdb://{directory}"))
    try:
        apply_migrations(client, exclusive=True)
        yield client
    finally:
        client.close()


def timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), _cpu()
    result = run()
    return time.perf_counter() - wall, _cpu() - cpu, result


def warm_up(data: Path, path: Path) -> None:
    """Backfill the file's first 2,000 rows once, untimed: the first backfill of a process
    pays for imports and the engine's first queries, which the measured runs should not."""
    from segwatch.collector.profile.backfill import backfill_file

    head = data / "warm-up.csv"
    with open(path) as source, open(head, "w") as out:
        out.writelines(line for _, line in zip(range(2001), source, strict=False))
    with fresh_store(data / "store") as client:
        backfill_file(client, str(head), model="bench", timestamp="ts")


def load() -> str:
    """The machine's load average (1, 5, 15 minutes), to read each figure by."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def throughput(data: Path, rows: int, core: int) -> None:
    import pandas as pd

    from segwatch.collector.config import CollectorConfig, StorageConfig
    from segwatch.collector.profile.backfill import backfill_file, keep_freed_memory

    start = int(time.time()) // HOUR * HOUR - 3 * HOUR
    path = data / f"throughput-{rows}.csv"
    if not path.exists():
        throughput_file(path, rows, start)
    size = path.stat().st_size / 2**20
    print(f"throughput: {rows:,} calls, 20 numeric + 5 category features, {size:.0f} MiB CSV, "
          f"pinned to core {core}; {load()}")  # fmt: skip
    pandas_s, pandas_cpu, _ = timed(lambda: pd.read_csv(path))
    print(f"  {'pandas.read_csv (baseline)':38} {pandas_s:6.2f} s  {rows / pandas_s:>11,.0f} "
          f"rows/s  {pandas_cpu:6.2f} CPU-s")  # fmt: skip
    keep_freed_memory()  # as segwatch backfill does
    warm_up(data, path)
    for raw_calls in (False, True):
        config = CollectorConfig(storage=StorageConfig(raw_calls=raw_calls))
        with fresh_store(data / "store") as client:
            seconds, cpu, result = timed(lambda c=client, k=config: backfill_file(  # type: ignore[misc]
                c, str(path), model="bench", timestamp="ts", config=k))  # fmt: skip
        assert result.rows == rows
        label = "backfill, aggregates + raw calls" if raw_calls else "backfill, aggregates only"
        print(f"  {label:38} {seconds:6.2f} s  {rows / seconds:>11,.0f} rows/s  {cpu:6.2f} "
              f"CPU-s  {seconds / pandas_s:5.1f}x pandas' read  {rows / cpu:>9,.0f} "
              "calls per CPU-second")  # fmt: skip
        if raw_calls:  # the target's rows are what spans would write: raw calls too
            verdict = "met" if rows / cpu >= TARGET_PER_CPU_SECOND else "not met"
            print(f"  target >= {TARGET_PER_CPU_SECOND:,} calls per CPU-second (raw calls on, "
                  f"one core): {verdict}; {load()}")  # fmt: skip


def scenario(data: Path) -> None:
    from segwatch.clickhouse.detection import load_manifest
    from segwatch.clickhouse.store import open_client, parse_dsn
    from segwatch.collector.config import CollectorConfig, SegmentsConfig
    from segwatch.collector.profile.backfill import backfill_file, keep_freed_memory
    from segwatch.collector.service.detect import detect_range

    start = int(time.time()) // HOUR * HOUR - 3 * HOUR
    path = data / f"scenario-{start}.csv"
    if not path.exists():
        scenario_file(path, start)
    print(f"scenario: {SCENARIO_ROWS:,} calls x 29 columns, 50 segments, half reference (1 h), "
          "half current (15 min), drift in " + " and ".join(f"segment={s} x {f}"
                                                           for s, f in DRIFTED)
          + f"; {load()}")  # fmt: skip
    import pandas as pd

    read_s, read_cpu, _ = timed(lambda: pd.read_csv(path))  # the read alone, for reference
    print(f"  pandas.read_csv of the file alone    {read_s:6.2f} s  "
          f"{SCENARIO_ROWS / read_s:>9,.0f} rows/s  {read_cpu:6.2f} CPU-s")  # fmt: skip
    keep_freed_memory()  # as segwatch backfill does
    warm_up(data, path)
    end = dt.datetime.fromtimestamp(start + HOUR + HOUR // 4, dt.timezone.utc)
    # 50 segments: every one its own (the default keeps the top 20 values of a field)
    config = CollectorConfig(segments=SegmentsConfig(top_k=50))
    with fresh_store(data / "store") as client:
        load_s, load_cpu, loaded = timed(lambda: backfill_file(
            client, str(path), model="scenario", timestamp="ts", config=config))  # fmt: skip
        specs = load_manifest()
        # the second session segwatch detect opens: the detectors' queries two at once
        helper = open_client(parse_dsn(f"chdb://{data / 'store'}"))
        detect_s, detect_cpu, ran = timed(lambda: detect_range(
            client, end - dt.timedelta(minutes=5), end, specs, helpers=[helper]))  # fmt: skip
        helper.close()
        findings = client.query(
            "SELECT detector, segment_dim, segment_value, quantity, round(score, 3) "
            "FROM ml_anomalies ORDER BY detector, segment_dim, segment_value, quantity"
        ).result_rows
    total = load_s + detect_s
    print(f"  backfill (read, aggregate, insert)  {load_s:6.2f} s  {loaded.rows / load_s:>9,.0f} "
          f"rows/s  {load_cpu:6.2f} CPU-s  {load_cpu / load_s:4.2f} cores busy")  # fmt: skip
    print(f"  detect (every detector, one window) {detect_s:6.2f} s  {ran.to_json()['windows']} "
          f"runs  {detect_cpu:6.2f} CPU-s  {detect_cpu / detect_s:4.2f} cores busy")  # fmt: skip
    verdict = "within" if total < 10 else "over"
    print(f"  total {total:.2f} s: {verdict} the 10 s target; {load()}")
    cells = {(f"segment={s}", f"feature.{f}") for s, f in DRIFTED}
    found = {(f"{dim.removeprefix('feature.')}={value}", quantity)
             for _, dim, value, quantity, _ in findings}  # fmt: skip
    print(f"  findings: {len(findings)}; injected cells found: {len(cells & found)} of "
          f"{len(cells)}; other findings: {len(found - cells)}")  # fmt: skip
    for detector, dim, value, quantity, score in findings:
        mark = (
            "  (injected)" if (f"{dim.removeprefix('feature.')}={value}", quantity) in cells else ""
        )
        print(f"    {detector:16} {dim}={value:12} {quantity:18} score {score}{mark}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000, help="throughput file's calls")
    parser.add_argument("--core", type=int, default=0, help="the core throughput is pinned to")
    parser.add_argument("--data", help="where the files and the store go (default: temporary)")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-scenario", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="segwatch-backfill-"))
    data.mkdir(parents=True, exist_ok=True)
    if not args.no_throughput and not args.no_scenario:
        # The pinned part in a process of its own: the engine's threads, once pinned, stay so.
        subprocess.run([sys.executable, __file__, "--no-scenario", "--rows", str(args.rows),
                        "--core", str(args.core), "--data", str(data)], check=True)  # fmt: skip
    elif not args.no_throughput:
        os.sched_setaffinity(0, {args.core})  # before the engine's threads exist: they inherit it
        throughput(data, args.rows, args.core)
    if not args.no_scenario:
        scenario(data)
    if not args.data:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
