"""Ingest benchmark: spans/s through receive → aggregate → store, embedded and over HTTP.

Measured in the same run on the same OTLP payload (requests of model-call
spans encoded by the real OTel SDK encoder, :mod:`ingest_payload`):

1. ``decode``: the bare protobuf decode (upb) of the requests;
2. ``decode + attribute pass``: the decode plus one Python pass that touches
   every attribute's key and value (the naive way to read spans);
3. ``embedded``: the requests sent over real gRPC on loopback to a ``segwatch
   collector`` subprocess on a fresh embedded store (``chdb://DIR``);
4. ``HTTP``: the same to a collector whose ``storage.dsn`` is ClickHouse's HTTP
   interface (Native inserts over HTTP): by default a ``segwatch serve``
   subprocess on a fresh embedded store, or with ``--dsn http(s)://...`` a
   server you run (migrated first, as ``segwatch migrate`` does; the run's
   model name is unique, so only its own calls are counted, and stay there).

For 3 and 4 the clock stops once every request is acknowledged (in the
collector's fsynced spool) *and* a query through the collector's API (which
flushes first) finds all of their calls in ClickHouse: end to end through the
store. The payload is the one issue 4 sets targets on: spans with 20 features,
3 outputs, 5 segment dimensions and 2 crosses (the collector gets that config);
each request is sent with trace ids of its own, as traffic brings.

Run: ``python bench/ingest.py [--requests 600] [--clients 2] [--segments 10000]
[--flush-calls 20000] [--rate 25000] [--no-http | --dsn http://HOST:8123/DB]``.
Prints the rates; per path the CPU each process kept busy (user + system time
of all its threads: the embedded engine's inserts and background merges run in
the collector on the embedded path, in ``segwatch serve`` on the HTTP one), the
CPU per span and the spans per CPU-second of the processes together, their RSS
idle and at peak; then the ratios to the baselines, HTTP / embedded, and the
embedded path against issue 18's targets (50,000 spans per CPU-second, 0.75 of the
attribute-pass baseline per CPU-second, RSS growth at most 150 MiB), each met or not. A
server named with ``--dsn`` is not a process of this run: its CPU is not counted.
Last, unless ``--no-encoders``, :mod:`ingest_encoders` in a process of its own: one
flush's raw-call rows inserted through segwatch's Native encoder, clickhouse-connect's
``insert`` and its Arrow insert, the CPU per row of each.
"""

from __future__ import annotations

import argparse
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from ingest_payload import TraceIdRewriter, bench_attribute_pass, bench_decode, build_payload
from ingest_processes import CollectorOptions, ProcessWatch, RunningPath, embedded_path, http_path

from segwatch.collector.cli.access import ApiAccess
from segwatch.collector.config import SpoolConfig

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass(frozen=True)
class Load:
    """What is sent to each path: request ``i`` is ``payloads[i % len(payloads)]`` with
    trace ids of its own (:class:`ingest_payload.TraceIdRewriter`), as traffic brings."""

    payloads: list[bytes]
    spans_per_request: int
    requests: int
    clients: int
    model: str
    rate: float | None = None  # spans/s; None: as fast as it goes
    rewriters: list[TraceIdRewriter] = field(default_factory=list)

    def request(self, index: int) -> bytes:
        if not self.rewriters:
            return self.payloads[index % len(self.payloads)]
        return self.rewriters[index % len(self.rewriters)].copy(index)


@dataclass(frozen=True)
class ProcessFigures:
    name: str
    cores: float  # CPU-seconds per second of the timed run
    idle_mib: float
    peak_mib: float


@dataclass(frozen=True)
class PathFigures:
    label: str
    spans_per_second: float
    processes: tuple[ProcessFigures, ...]
    segments: int

    @property
    def cores(self) -> float:
        return sum(process.cores for process in self.processes)

    @property
    def per_cpu_second(self) -> float:
        """Spans per CPU-second of every process measured on this path, together."""
        return self.spans_per_second / self.cores


def _ask(api: ApiAccess, query: str) -> int:
    """A number from the store, asked through the collector's API (which flushes first)."""
    return int(api.sql(query).rows[0][0])


def _model_literal(model: str) -> str:
    """The run's model name as an SQL literal: the API takes no query parameters, and the
    name is made in :func:`main` of letters, digits and ``_`` (checked here)."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", model):
        raise ValueError(f"model name {model!r} is not letters, digits and _")
    return f"'{model}'"


def stored_calls(api: ApiAccess, model: str) -> int:
    """The model's calls in the store's aggregates (with or without raw rows)."""
    return _ask(
        api,
        "SELECT toUInt64(sum(sampled)) FROM ml_segment_aggregates "
        f"WHERE model_name = {_model_literal(model)} AND segment_dim = '__all__' "
        "AND quantity = 'output.score'",
    )


def active_segments(api: ApiAccess, model: str) -> int:
    return _ask(
        api,
        "SELECT uniqExact(segment_dim, segment_value) FROM ml_segment_aggregates "
        f"WHERE model_name = {_model_literal(model)} AND quantity = 'output.score'",
    )


@contextmanager
def peak_rss(watches: tuple[ProcessWatch, ...]) -> Iterator[dict[str, float]]:
    """Each process's highest RSS (MiB), sampled every 0.2 s while the block runs."""
    peaks = {watch.name: watch.rss_mib() for watch in watches}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            for watch in watches:
                peaks[watch.name] = max(peaks[watch.name], watch.rss_mib())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield peaks
    finally:
        done.set()
        sampler.join()


def send(export: grpc.UnaryUnaryMultiCallable[bytes, bytes], load: Load) -> None:
    """Requests 1..N from ``load.clients`` threads; with a rate, request ``i`` no sooner than
    ``i - 1`` request intervals after the start (a steady stream, not flat out)."""
    remaining = iter(range(1, load.requests + 1))
    lock = threading.Lock()
    started = time.perf_counter()

    def worker() -> None:
        while True:
            with lock:
                index = next(remaining, None)
            if index is None:
                return
            if load.rate:
                due = started + (index - 1) * load.spans_per_request / load.rate
                time.sleep(max(0.0, due - time.perf_counter()))
            export(load.request(index), timeout=120)

    threads = [threading.Thread(target=worker) for _ in range(load.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def measure(path: AbstractContextManager[RunningPath], load: Load) -> PathFigures:
    """Spans/s end to end through the path's collector, and what its processes used."""
    with path as running:
        channel = grpc.insecure_channel(
            running.otlp, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        export = channel.unary_unary(  # raw bytes in and out
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )
        idle = {watch.name: watch.rss_mib() for watch in running.processes}
        export(load.payloads[0], timeout=60)  # warm-up: first inserts, caches
        with peak_rss(running.processes) as peaks:
            cpu_before = [watch.cpu_seconds() for watch in running.processes]
            started = time.perf_counter()
            send(export, load)
            stored = stored_calls(running.api, load.model)
            elapsed = time.perf_counter() - started
            cpu = [
                w.cpu_seconds() - before
                for w, before in zip(running.processes, cpu_before, strict=True)
            ]
        channel.close()
        segments = active_segments(running.api, load.model)
    if stored != (load.requests + 1) * load.spans_per_request:
        raise RuntimeError(f"{stored} calls in the store, {load.requests + 1} requests sent")
    processes = tuple(
        ProcessFigures(watch.name, used / elapsed, idle[watch.name], peaks[watch.name])
        for watch, used in zip(running.processes, cpu, strict=True)
    )
    rate = load.requests * load.spans_per_request / elapsed
    return PathFigures(running.label, rate, processes, segments)


def print_path(figures: PathFigures) -> None:
    """The path's rate, then per process its cores, CPU per span and RSS, then all of them."""
    print(f"{'segwatch, ' + figures.label:44s} {figures.spans_per_second:12,.0f} spans/s "
          "end to end")  # fmt: skip
    for process in figures.processes:
        print(
            f"  {process.name:10s} {process.cores:5.2f} cores busy, "
            f"{process.cores / figures.spans_per_second * 1e6:6.1f} µs CPU per span; "
            f"RSS idle {process.idle_mib:.0f} MiB, peak {process.peak_mib:.0f} MiB "
            f"(+{process.peak_mib - process.idle_mib:.0f} MiB)"
        )
    print(f"  {'together':10s} {figures.cores:5.2f} cores busy, "
          f"{figures.cores / figures.spans_per_second * 1e6:6.1f} µs CPU per span; "
          f"{figures.per_cpu_second:,.0f} spans per CPU-second; "
          f"{figures.segments:,} active segments")  # fmt: skip


def print_ratios(decode: float, walk: float, paths: list[PathFigures]) -> None:
    """Each path against the baselines; then HTTP / embedded when both ran."""
    print(f"{'ratios':36s}" + "".join(f"{figures.label.split()[0]:>10s}" for figures in paths))
    rows = [
        ("segwatch / decode", [f.spans_per_second / decode for f in paths]),
        ("segwatch / decode + attribute pass", [f.spans_per_second / walk for f in paths]),
        ("per CPU-second / attribute pass", [f.per_cpu_second / walk for f in paths]),
    ]
    for name, values in rows:
        print(f"  {name:34s}" + "".join(f"{value:10.3f}" for value in values))
    if len(paths) == 2:
        embedded, http = paths
        print(f"ratio HTTP / embedded: {http.spans_per_second / embedded.spans_per_second:.3f} "
              f"end to end, {http.per_cpu_second / embedded.per_cpu_second:.3f} per "
              "CPU-second")  # fmt: skip


TARGET_PER_CPU_SECOND = 50_000
"""Issue 18's ingest targets, for the embedded path with raw calls and ``otel_traces`` on:
spans per CPU-second of the collector, that rate against the attribute-pass baseline, and
the RSS growth under load (MiB)."""
TARGET_RATIO = 0.75
TARGET_RSS_GROWTH_MIB = 150


def print_targets(walk: float, embedded: PathFigures, as_set: bool) -> None:
    """The embedded path against issue 18's targets, each with met or not met; ``as_set``
    False says the run was not in the targets' configuration."""
    growth = max(p.peak_mib - p.idle_mib for p in embedded.processes)
    ratio = embedded.per_cpu_second / walk
    rows = [
        (f"spans per CPU-second {embedded.per_cpu_second:,.0f}",
         f">= {TARGET_PER_CPU_SECOND:,}", embedded.per_cpu_second >= TARGET_PER_CPU_SECOND),
        (f"per CPU-second / attribute pass {ratio:.3f}", f">= {TARGET_RATIO}",
         ratio >= TARGET_RATIO),
        (f"RSS growth +{growth:.0f} MiB", f"<= {TARGET_RSS_GROWTH_MIB} MiB",
         growth <= TARGET_RSS_GROWTH_MIB),
    ]  # fmt: skip
    print("issue 18 targets (embedded" + ("" if as_set else "; this run has raw calls or "
          "otel_traces off, the targets are set with both on") + "):")  # fmt: skip
    for measured, target, met in rows:
        print(f"  {measured:42s} target {target:12s} {'met' if met else 'NOT met'}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--spans-per-request", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--clients", type=int, default=2, help="concurrent gRPC clients")
    parser.add_argument(
        "--segments",
        type=int,
        default=0,
        help="make about this many segments active (country × device cross of N/10 × 10 "
        "values, over 20 different requests); default: 7 countries × 3 devices",
    )
    parser.add_argument(
        "--flush-calls",
        type=int,
        default=SpoolConfig().flush_calls,
        help="the collector's storage.spool.flush_calls (max_pending_calls: twice that)",
    )
    parser.add_argument(
        "--histogram-accuracy", type=float, default=0.01, help="storage.histogram_accuracy"
    )
    parser.add_argument(
        "--no-raw-calls", action="store_true", help="storage.raw_calls: false (aggregates only)"
    )
    parser.add_argument(
        "--no-traces", action="store_true",
        help="storage.traces.write: false (no spans to otel_traces)",
    )  # fmt: skip
    parser.add_argument(
        "--no-fsync-parts",
        action="store_true",
        help="storage.fsync_parts: false (inserts return before their parts are on disk)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="send at most this many spans/s (a steady stream; default: as fast as it goes)",
    )
    parser.add_argument(
        "--no-encoders", action="store_true",
        help="skip the raw-call insert three ways (ingest_encoders.py: segwatch's Native "
        "encoder, clickhouse-connect's insert and its Arrow insert)",
    )  # fmt: skip
    parser.add_argument(
        "--store", type=Path, default=None,
        help="keep the embedded path's store (and its spool, config and log) in this new "
        "directory, to open after the run (its system.parts, the stored rows)",
    )  # fmt: skip
    paths = parser.add_mutually_exclusive_group()
    paths.add_argument("--no-http", action="store_true",
                       help="measure the embedded path only")  # fmt: skip
    paths.add_argument(
        "--dsn",
        default=None,
        help="the HTTP path through this ClickHouse server (http(s)://user:pass@host:8123/db; "
        "migrated first) instead of a segwatch serve started here",
    )
    args = parser.parse_args()
    if args.dsn is not None and not re.match(r"https?://", args.dsn):
        parser.error("--dsn takes an http:// or https:// DSN")
    return args


def main() -> None:
    args = parse_args()
    # A name no other run uses: on a server given with --dsn, only this run's calls count.
    model = f"fraud_{secrets.token_hex(4)}"
    if args.segments:
        countries = max(8, args.segments // 10)
        payloads = [build_payload(args.spans_per_request, seed, countries, 10, model)
                    for seed in range(20)]  # fmt: skip
    else:
        countries, payloads = 20, [build_payload(args.spans_per_request, model=model)]
    print(
        f"payload: {args.spans_per_request} spans/request, {len(payloads[0]) / 1024:.0f} KiB; "
        "per span 20 features (5 segment dimensions, 2 crosses) + 3 outputs"
        + (f"; {countries} countries x 10 devices" if args.segments else "")
    )
    decode = bench_decode(payloads[0], args.requests)
    walk = bench_attribute_pass(payloads[0], args.requests)
    options = CollectorOptions(countries, args.flush_calls, args.histogram_accuracy,
                               not args.no_raw_calls, not args.no_fsync_parts,
                               not args.no_traces)  # fmt: skip
    load = Load(payloads, args.spans_per_request, args.requests, args.clients, model, args.rate,
                [TraceIdRewriter(payload) for payload in payloads])  # fmt: skip
    paths = [measure(embedded_path(options, model, args.store), load)]
    if not args.no_http:
        paths.append(measure(http_path(options, model, args.dsn), load))
    print(f"{'baseline: protobuf decode':44s} {decode:12,.0f} spans/s")
    print(f"{'baseline: decode + one pass over attributes':44s} {walk:12,.0f} spans/s")
    for figures in paths:
        print_path(figures)
    print_ratios(decode, walk, paths)
    print_targets(walk, paths[0], not (args.no_raw_calls or args.no_traces))
    if not args.no_encoders:  # a process of its own: one embedded store per process
        encoders = Path(__file__).with_name("ingest_encoders.py")
        calls = min(args.flush_calls, args.requests * args.spans_per_request)  # one flush
        subprocess.run([sys.executable, str(encoders), "--calls", str(calls)], check=True)


if __name__ == "__main__":
    main()
