"""Soak: a collector under a steady stream for minutes; its memory must stay flat, nothing lost.

A ``segwatch collector`` subprocess on a fresh embedded store (the config of
``bench/ingest.py``: 20 features, 5 segment dimensions, 2 crosses) takes
requests of 1,000 model-call spans from a *separate sender process* at a fixed
rate over real gRPC on loopback. Every few seconds this process samples the
collector's RSS and its queue depth (calls waiting in memory and bytes in
the spool, from its ``/metrics``). At the end it asks the store, through the
collector's API (which flushes first), how many calls it holds: it must be
every span the sender had acknowledged.

Run: ``python bench/soak.py [--minutes 10] [--rate 10000] [--every 5]``.
Prints one line per sample, then the RSS curve (start, peak, end; the start
is the first sample after a minute of warm-up, when caches and the
allocator's arenas have settled), the achieved rate and the loss.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from ingest import EXPORT_METHOD, stored_calls  # bench/ is not a package
from ingest_payload import build_payload
from ingest_processes import CollectorOptions, embedded_path

SPANS_PER_REQUEST = 1000
MODEL = "fraud"  # the payload's model, the one whose stored calls are counted


def send(address: str, rate: float, seconds: float) -> None:
    """The sender process: requests at ``rate`` spans/s for ``seconds``; prints what was acked."""
    payloads = [build_payload(SPANS_PER_REQUEST, seed) for seed in range(8)]
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
    export = channel.unary_unary(EXPORT_METHOD)
    interval = SPANS_PER_REQUEST / rate
    acked = refused = 0
    started = time.perf_counter()
    index = 0
    while time.perf_counter() - started < seconds:
        due = started + index * interval
        time.sleep(max(0.0, due - time.perf_counter()))
        try:
            export(payloads[index % len(payloads)], timeout=60)
            acked += SPANS_PER_REQUEST
        except grpc.RpcError:
            refused += 1
        index += 1
    elapsed = time.perf_counter() - started
    print(json.dumps({"acked": acked, "refused": refused, "seconds": elapsed}), flush=True)


def _queue_depth(api: str) -> tuple[float, float]:
    """(calls waiting in memory, spool bytes) from the collector's /metrics."""
    with urllib.request.urlopen(f"{api}/metrics", timeout=30) as response:
        values = {}
        for line in response.read().decode().splitlines():
            if line.startswith(("segwatch_pending_calls ", "segwatch_spool_bytes ")):
                name, value = line.split()
                values[name] = float(value)
    return values["segwatch_pending_calls"], values["segwatch_spool_bytes"]


def soak(minutes: float, rate: float, every: float) -> None:
    # embedded_path stops the collector (SIGTERM, then waits) when the block ends.
    with embedded_path(CollectorOptions(), MODEL) as path:
        collector = path.processes[0]
        sender = subprocess.Popen(
            [sys.executable, __file__, "--send", path.otlp, "--rate", str(rate),
             "--minutes", str(minutes)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        samples: list[tuple[float, float, float, float]] = []
        started = time.monotonic()
        print(" elapsed s   RSS MiB   pending calls   spool MiB")
        while sender.poll() is None:
            time.sleep(every)
            pending, spool = _queue_depth(path.api.base_url)
            sample = (time.monotonic() - started, collector.rss_mib(), pending, spool)
            samples.append(sample)
            print(f"{sample[0]:10.0f} {sample[1]:9.0f} {pending:15,.0f} {spool / 2**20:11.1f}",
                  flush=True)  # fmt: skip
        result = json.loads(sender.stdout.read())  # type: ignore[union-attr]
        stored = stored_calls(path.api, MODEL)
    settled = [s for s in samples if s[0] >= 60] or samples
    start, end = settled[0], settled[-1]
    peak = max(settled, key=lambda s: s[1])
    acked, seconds = result["acked"], result["seconds"]
    print(f"\nsent {acked:,} spans acknowledged ({result['refused']} requests refused) "
          f"in {seconds:.0f} s: {acked / seconds:,.0f} spans/s")  # fmt: skip
    print(f"RSS after warm-up: start {start[1]:.0f} MiB (at {start[0]:.0f} s), peak "
          f"{peak[1]:.0f} MiB (at {peak[0]:.0f} s), end {end[1]:.0f} MiB; "
          f"end - start {end[1] - start[1]:+.0f} MiB")  # fmt: skip
    minutes: dict[int, list[float]] = {}
    for sample in samples:
        minutes.setdefault(int(sample[0] // 60), []).append(sample[1])
    print("RSS by minute (lowest-highest MiB): " + ", ".join(
        f"{m}: {min(v):.0f}-{max(v):.0f}" for m, v in sorted(minutes.items())
    ))  # fmt: skip
    print(
        f"most calls waiting: {max(s[2] for s in samples):,.0f}; "
        f"largest spool: {max(s[3] for s in samples) / 2**20:.1f} MiB"
    )
    lost = result["acked"] - stored
    print(f"in the store: {stored:,} calls; lost: {lost:,}")
    if lost:
        raise SystemExit(f"{lost} acknowledged calls are not in the store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=10_000, help="spans/s the sender sends")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--send", metavar="ADDRESS", help=argparse.SUPPRESS)  # the sender
    args = parser.parse_args()
    if args.send:
        send(args.send, args.rate, args.minutes * 60)
    else:
        soak(args.minutes, args.rate, args.every)


if __name__ == "__main__":
    main()
