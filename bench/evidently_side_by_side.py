"""segwatch's drift detector and Evidently's drift preset on the same calls, side by side.

One model, 20 countries (the segments), five numeric features and one category;
an hour of baseline then 15 minutes in which ``amount`` drifts for BR only. The
calls go through segwatch's real path (SDK batch spans, decoder, aggregator,
embedded store) and ``psi_drift`` runs once for the window; Evidently's
``DataDriftPreset`` runs on the same rows as DataFrames, per segment (the way a
per-segment monitor has to use it) and on the whole model. The table shows,
per segment, what each found for ``amount``, and how many (segment, feature)
pairs each flagged in all: one drift was injected.

Evidently is not a dependency of segwatch; it needs pandas < 3. Run it from its
own environment::

    python -m venv /tmp/evenv && /tmp/evenv/bin/pip install -e '.[collector]' \\
        evidently==0.7.23 'pandas<3'
    /tmp/evenv/bin/python bench/evidently_side_by_side.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import tempfile
import time
from typing import Any

import numpy as np
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from segwatch.clickhouse.detection import load_manifest, run_detector
from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import monitor

COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "MX", "ES", "IT", "CA",
             "JP", "AU", "NL", "SE", "PL", "TR", "AR", "CO", "ZA", "NG"]  # fmt: skip
PER_MINUTE = 1000  # calls a minute, spread evenly over the countries
BASELINE_MINUTES, WINDOW_MINUTES = 60, 15
DRIFTED = ("BR", "amount")


def generate(end: int, seed: int = 5) -> list[tuple[int, dict[str, Any]]]:
    """(minute, columns) for every minute of baseline and window, BR's amounts
    five times larger in the window."""
    rng = np.random.default_rng(seed)
    minutes = []
    for k in range(BASELINE_MINUTES + WINDOW_MINUTES):
        minute = end - 60 * (BASELINE_MINUTES + WINDOW_MINUTES - k)
        country = np.asarray(COUNTRIES, dtype=object)[rng.integers(0, len(COUNTRIES), PER_MINUTE)]
        columns = {
            "country": country,
            "channel": np.asarray(["web", "app"], dtype=object)[rng.integers(0, 2, PER_MINUTE)],
            "amount": rng.lognormal(3.5, 0.8, PER_MINUTE),
            "age": rng.normal(40, 12, PER_MINUTE),
            "items": rng.poisson(3, PER_MINUTE).astype(float),
            "tenure": rng.exponential(300, PER_MINUTE),
            "rating": rng.normal(4.2, 0.5, PER_MINUTE),
        }
        if k >= BASELINE_MINUTES:
            columns["amount"][country == DRIFTED[0]] *= 5
        minutes.append((minute, columns))
    return minutes


def run_segwatch(minutes: list[tuple[int, dict[str, Any]]], end: int) -> tuple[list[dict], float]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    model = monitor(model="shop", version="1", tracer_provider=provider)
    for minute, columns in minutes:
        at = (minute + 30) * 1_000_000_000
        with model.call(start_time=at, end_time=at + 1) as call:
            call.batch(PER_MINUTE, columns)
    with tempfile.TemporaryDirectory(prefix="segwatch-vs-evidently-") as tmp:
        client = open_client(parse_dsn(f"chdb://{tmp}/store"))
        apply_migrations(client)
        exporter = ClickHouseExporter(client)
        exporter.start()
        batch = decode_request(encode_spans(spans.get_finished_spans()))
        exporter.submit(SegmentAggregator().aggregate(batch)).result(timeout=120)
        exporter.shutdown()
        spec = next(s for s in load_manifest() if s.name == "psi_drift")
        spec = type(spec)(**{**spec.__dict__, "window": 60 * WINDOW_MINUTES,
                             "baseline": 60 * BASELINE_MINUTES})  # fmt: skip
        run = run_detector(client, spec, dt.datetime.fromtimestamp(end, dt.timezone.utc))
        client.close()
    return run.new_anomalies, run.seconds


def run_evidently(minutes: list[tuple[int, dict[str, Any]]]) -> tuple[dict, float]:
    pd = importlib.import_module("pandas")
    report_class = importlib.import_module("evidently").Report
    preset = importlib.import_module("evidently.presets").DataDriftPreset
    frames = [pd.DataFrame(columns) for _, columns in minutes]
    reference = pd.concat(frames[:BASELINE_MINUTES], ignore_index=True)
    current = pd.concat(frames[BASELINE_MINUTES:], ignore_index=True)
    features = [c for c in reference.columns if c != "country"]
    results: dict[str, dict[str, tuple[str, float, bool]]] = {}
    started = time.perf_counter()
    for segment in ["__all__", *COUNTRIES]:
        ref, cur = reference, current
        if segment != "__all__":
            ref, cur = reference[reference.country == segment], current[current.country == segment]
        snapshot = report_class([preset()]).run(cur[features], ref[features]).dict()
        per_column = {}
        for metric in snapshot["metrics"]:
            config = metric["config"]
            if config.get("type", "").endswith("ValueDrift"):
                score = float(metric["value"])
                # Evidently: p-value methods drift below the threshold, distances above it
                is_p = "p_value" in config["method"] or "test" in config["method"].lower()
                drifted = score < config["threshold"] if is_p else score >= config["threshold"]
                per_column[config["column"]] = (config["method"], score, drifted)
        results[segment] = per_column
    return results, time.perf_counter() - started


def parse_args() -> argparse.Namespace:
    """No options: ``--help`` prints what the bench measures, and how to run it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser.parse_args()


def main() -> None:
    parse_args()
    now = int(time.time())
    end = now - now % 300
    minutes = generate(end)
    found, segwatch_seconds = run_segwatch(minutes, end)
    try:
        evidently, evidently_seconds = run_evidently(minutes)
    except ImportError as exc:
        raise SystemExit(f"Evidently is not importable here ({exc}); see the docstring") from exc
    segwatch_amount = {a["segment_value"]: a for a in found if a["quantity"] == "feature.amount"}
    print(
        f"{BASELINE_MINUTES} min baseline, {WINDOW_MINUTES} min window, {PER_MINUTE} calls/min, "
        f"{len(COUNTRIES)} countries; injected: amount x5 for country={DRIFTED[0]}\n"
    )
    header = f"{'segment':10s} | {'segwatch psi_drift on amount':44s} | "
    print(header + "Evidently DataDriftPreset on amount")
    for segment in ["__all__", *COUNTRIES]:
        mine = segwatch_amount.get(segment)
        left = "-"
        if mine:
            left = (f"FOUND  PSI {mine['score']:.2f}, KS {mine['statistics']['ks']:.2f}, "
                    f"p {mine['p_value']:.1e}")  # fmt: skip
        method, score, drifted = evidently[segment]["amount"]
        right = f"{'DRIFT' if drifted else '-':5s}  {method} {score:.3g}"
        print(f"{segment:10s} | {left:44s} | {right}")
    flags = [(s, c) for s, cols in evidently.items() for c, v in cols.items() if v[2]]
    pairs = sum(len(cols) for cols in evidently.values())
    findings = "; ".join(f"{a['segment_dim']}={a['segment_value']} {a['quantity']}" for a in found)
    print(f"\nsegwatch: {len(found)} finding(s) in {segwatch_seconds:.2f} s: {findings}")
    print(
        f"Evidently: {len(flags)} of {pairs} (segment, feature) pairs flagged as drifted in "
        f"{evidently_seconds:.1f} s: " + ", ".join(f"{s}/{c}" for s, c in flags)
    )


if __name__ == "__main__":
    main()
