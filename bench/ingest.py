"""Ingest benchmark: spans/s through receive → aggregate → store, beside two baselines.

All three are measured in the same run on the same OTLP payload (requests of
model-call spans encoded by the real OTel SDK encoder):

1. ``decode``: the bare protobuf decode (upb) of the requests;
2. ``decode + attribute pass``: the decode plus one Python pass that touches
   every attribute's key and value (the naive way to read spans);
3. ``segwatch``: the requests sent over real gRPC on loopback to a
   ``segwatch collector`` subprocess on a fresh embedded store. The clock
   stops once every request is acknowledged (in the collector's fsynced
   spool) *and* a query through the collector's API (which flushes first)
   finds all of their raw rows in ClickHouse: end to end through the store.

The payload is the one issue 4 sets targets on: spans with 20 features, 3
outputs, 5 segment dimensions and 2 crosses (the collector gets that config).

Run: ``python bench/ingest.py [--requests 600] [--clients 2] [--segments 10000]
[--flush-calls 20000] [--rate 25000]``. Prints the three rates, segwatch's spans per CPU-second
(the collector process's user + system time: its threads and the embedded
engine's, background merges included), the ratios to each baseline, and the
collector's RSS idle and at its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from segwatch.collector.cli.access import ApiAccess
from segwatch.collector.config import SpoolConfig
from segwatch.instrumentation import monitor

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# Five segment dimensions (country, device, channel, amount, hour) and two
# crosses; the other fifteen features are measured, not segmented.
CONFIG_MODELS = """\
segments:
  crosses: [[country, device], [channel, amount]]
models:
  fraud:
    features:
      country: {type: category}
      device: {type: category}
      channel: {type: category}
      amount: {type: number, segments: {log: {base: 10}}}
      hour: {type: number, segments: {linear: {width: 6}}}
""" + "".join(f"      f{j}: {{type: number, segment: false}}\n" for j in range(15))


COUNTRIES = ["US", "BR", "DE", "FR", "IN", "MX", "GB"]


def build_payload(
    spans_per_request: int, seed: int = 1, countries: int = 7, devices: int = 3
) -> bytes:
    """One serialized request of fraud-model spans: 20 features, 3 outputs.

    Five features are segment dimensions and two crosses are declared (see
    CONFIG_MODELS). Span start times spread over the 5 seconds before now,
    like one batch of the SDK's BatchSpanProcessor (it exports every 5 s).
    """
    rng = random.Random(seed)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    model = monitor("fraud", version="2.3", tracer_provider=provider)
    start = time.time() - 5
    for _ in range(spans_per_request):
        at = int((start + rng.random() * 5) * 1e9)
        with model.call(start_time=at, end_time=at + 1_000_000) as call:
            features = {f"f{j}": round(rng.gauss(j, 1 + j / 5), 3) for j in range(15)}
            call.features(
                country=rng.choice(COUNTRIES[:countries])
                if countries <= 7
                else f"c{rng.randrange(countries)}",
                device=rng.choice(["ios", "android", "web"])
                if devices <= 3
                else f"d{rng.randrange(devices)}",
                channel=rng.choice(["app", "site", "pos"]),
                amount=round(rng.lognormvariate(3.9, 0.8), 2),
                hour=rng.randint(0, 23),
                **features,
            )
            call.outputs(score=round(rng.random(), 4), label=rng.choice(["ok", "review"]),
                         latency_ms=round(rng.expovariate(0.2), 2))  # fmt: skip
    payload = encode_spans(exporter.get_finished_spans()).SerializeToString()
    provider.shutdown()
    return bytes(payload)


def bench_decode(payload: bytes, repeat: int) -> float:
    started = time.perf_counter()
    spans = 0
    for _ in range(repeat):
        request = ExportTraceServiceRequest.FromString(payload)
        spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
    return spans / (time.perf_counter() - started)


def bench_attribute_pass(payload: bytes, repeat: int) -> float:
    started = time.perf_counter()
    spans = 0
    for _ in range(repeat):
        request = ExportTraceServiceRequest.FromString(payload)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans += 1
                    for kv in span.attributes:
                        key = kv.key
                        value = kv.value
                        kind = value.WhichOneof("value")
                        if kind is not None:
                            getattr(value, kind)
                        del key
    return spans / (time.perf_counter() - started)


def _ask(api: ApiAccess, query: str) -> int:
    """A number from the store, asked through the collector's API (which flushes first)."""
    return int(api.sql(query).rows[0][0])


def stored_calls(api: ApiAccess) -> int:
    """Calls in the store's aggregates (with or without raw rows)."""
    return _ask(
        api,
        "SELECT toUInt64(sum(sampled)) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'output.score'",
    )


def active_segments(api: ApiAccess) -> int:
    return _ask(
        api,
        "SELECT uniqExact(segment_dim, segment_value) FROM ml_segment_aggregates "
        "WHERE quantity = 'output.score'",
    )


@dataclass(frozen=True)
class CollectorOptions:
    """What the benchmark varies in the collector's config."""

    top_k: int = 20
    flush_calls: int = SpoolConfig().flush_calls
    histogram_accuracy: float = 0.01
    raw_calls: bool = True
    fsync_parts: bool = True


def start_collector(
    store: Path, options: CollectorOptions
) -> tuple[subprocess.Popen[str], str, ApiAccess]:
    config = store.parent / "bench.yaml"
    flush_calls = options.flush_calls
    config.write_text(
        f"storage:\n  dsn: chdb://{store}\n"
        f"  histogram_accuracy: {options.histogram_accuracy}\n"
        f"  raw_calls: {'true' if options.raw_calls else 'false'}\n"
        f"  fsync_parts: {'true' if options.fsync_parts else 'false'}\n"
        f"  spool:\n    flush_calls: {flush_calls}\n    max_pending_calls: {2 * flush_calls}\n"
        "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        "api:\n  endpoint: 127.0.0.1:0\n"
        "scheduler:\n  enabled: false\n"
        + CONFIG_MODELS.replace("segments:\n", f"segments:\n  top_k: {options.top_k}\n")
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "segwatch.collector.cli", "collector", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    discovery = store / "segwatch-collector.json"
    deadline = time.monotonic() + 60
    while not discovery.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"collector did not start: {process.stderr.read()}")  # type: ignore[union-attr]
        time.sleep(0.05)
    found = json.loads(discovery.read_text())
    return process, str(found["otlp_grpc"]), ApiAccess(found["api"], token=found["token"])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_collector(
    payloads: list[bytes],
    spans_per_request: int,
    requests: int,
    clients: int,
    options: CollectorOptions,
    rate: float | None = None,
) -> tuple[float, float, float, float]:
    """Spans/s through the collector, the CPU it used (cores busy), its RSS idle and at peak.

    With a ``rate`` (spans/s), request ``i`` is sent no sooner than ``i`` request
    intervals after the start: the load of a steady stream instead of flat out.
    """
    with tempfile.TemporaryDirectory(prefix="segwatch-bench-") as tmp:
        process, address, api = start_collector(Path(tmp) / "store", options)
        try:
            channel = grpc.insecure_channel(
                address, options=[("grpc.max_send_message_length", 64 << 20)]
            )
            export = channel.unary_unary(EXPORT_METHOD)  # raw bytes in and out
            idle = _rss_mib(process.pid)
            export(payloads[0], timeout=60)  # warm-up: first inserts, caches
            peak = idle
            sampling = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not sampling.wait(0.2):
                    peak = max(peak, _rss_mib(process.pid))

            sampler = threading.Thread(target=sample)
            sampler.start()
            remaining = iter(range(1, requests + 1))
            lock = threading.Lock()

            def worker() -> None:
                while True:
                    with lock:
                        index = next(remaining, None)
                    if index is None:
                        return
                    if rate:
                        due = started + (index - 1) * spans_per_request / rate
                        time.sleep(max(0.0, due - time.perf_counter()))
                    export(payloads[index % len(payloads)], timeout=120)

            threads = [threading.Thread(target=worker) for _ in range(clients)]
            cpu_before = _cpu_seconds(process.pid)
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            stored = stored_calls(api)
            elapsed = time.perf_counter() - started
            cores = (_cpu_seconds(process.pid) - cpu_before) / elapsed
            sampling.set()
            sampler.join()
            channel.close()
            segments = active_segments(api)
            if stored != (requests + 1) * spans_per_request:
                raise RuntimeError(f"{stored} calls in the store, {requests + 1} requests sent")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    print(f"active segments in the store: {segments:,}")
    return requests * spans_per_request / elapsed, cores, idle, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = parser.parse_args()
    if args.segments:
        countries = max(8, args.segments // 10)
        payloads = [build_payload(args.spans_per_request, seed, countries, 10)
                    for seed in range(20)]  # fmt: skip
    else:
        countries, payloads = 20, [build_payload(args.spans_per_request)]
    payload = payloads[0]
    print(
        f"payload: {args.spans_per_request} spans/request, {len(payload) / 1024:.0f} KiB; "
        "per span 20 features (5 segment dimensions, 2 crosses) + 3 outputs"
        + (f"; {countries} countries x 10 devices" if args.segments else "")
    )
    decode = bench_decode(payload, args.requests)
    walk = bench_attribute_pass(payload, args.requests)
    ours, cores, idle, peak = bench_collector(
        payloads,
        args.spans_per_request,
        args.requests,
        args.clients,
        CollectorOptions(
            countries,
            args.flush_calls,
            args.histogram_accuracy,
            not args.no_raw_calls,
            not args.no_fsync_parts,
        ),
        args.rate,
    )
    print(f"{'baseline: protobuf decode':44s} {decode:12,.0f} spans/s")
    print(f"{'baseline: decode + one pass over attributes':44s} {walk:12,.0f} spans/s")
    print(f"{'segwatch: receive -> aggregate -> store':44s} {ours:12,.0f} spans/s")
    print(
        f"{'segwatch per core (spans per CPU-second)':44s} {ours / cores:12,.0f} spans/s "
        f"(the collector kept {cores:.2f} cores busy)"
    )
    print(f"ratio segwatch / decode:                 {ours / decode:6.3f}")
    print(f"ratio segwatch / decode + attribute pass: {ours / walk:6.3f}")
    print(f"ratio per core / decode + attribute pass: {ours / cores / walk:6.3f}")
    print(
        f"collector RSS: idle {idle:.0f} MiB, peak under load {peak:.0f} MiB "
        f"(+{peak - idle:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
