"""``segwatch demo``: a collector, a simulated service, a drift in one segment, found.

The simulated service runs two models instrumented with
``segwatch.instrumentation.monitor`` and sends its spans through the OTel
SDK's OTLP/gRPC exporter to a real collector on a loopback port, which writes
to a real embedded ClickHouse. Traffic is replayed with span start times over
the last 75 minutes (``monitor.call(start_time=...)``), so an hour of baseline
takes seconds: 60 minutes as usual, then 15 minutes in which transaction
amounts grow eightfold for ``country=BR`` only. The detectors then run as the
scheduler would have in the last 5 minutes: for the windows ending 5 minutes
ago and now (PSI: the last 15 minutes against the hour before), so a finding
seen in both persists and opens an anomaly. The demo prints the latest windows'
findings and says how many the windows before found.

``--data DIR`` keeps the store and writes ``DIR/segwatch.yaml`` (:data:`DEMO_CONFIG`),
the demo's config, so that ``segwatch anomalies --config DIR/segwatch.yaml`` (and
``detect``, ``report``) read the store as the demo did; the demo's last line says
so. Without it the store is temporary, and the last line says it is gone. Run
again on the same DIR, the demo starts from an empty store there (after saying
so): its traffic is replayed at the current time, and adding it to an earlier
run's would double the calls of the minutes they share. A DIR the demo did not
make (no :data:`DEMO_MARK` in it) is never emptied: the demo refuses it (exit 2).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from segwatch.clickhouse.detection import load_manifest
from segwatch.clickhouse.queries import QueryResult
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.detectors import SchedulerConfig
from segwatch.collector.config.load import parse_config
from segwatch.collector.config.network import ApiConfig, ReceiverConfig
from segwatch.collector.service.collector import Collector
from segwatch.collector.service.detect import DetectionResult
from segwatch.collector.service.discovery import refuse_if_held
from segwatch.instrumentation import monitor

from .exits import EXIT_USAGE
from .output import print_table

__all__ = [
    "DEMO_CONFIG",
    "DEMO_MARK",
    "DemoScenario",
    "demo_config_yaml",
    "follow_up",
    "run_demo",
    "service_tracer_provider",
    "simulate",
]

DEMO_MARK = "segwatch-demo.txt"
"""The file that marks a store directory as the demo's own, which a later run may empty."""

DEMO_CONFIG = "segwatch.yaml"
"""The demo's config, written beside :data:`DEMO_MARK` in a ``--data`` directory."""

NS = 1_000_000_000
COUNTRIES = ["US", "US", "US", "BR", "BR", "DE", "FR", "IN", "MX", "GB"]
LANGUAGES = ["en", "en", "en", "es", "es", "pt", "de", "fr"]


@dataclass(frozen=True)
class DemoScenario:
    """The simulated traffic; ``end`` is a 5-minute boundary (epoch seconds); the demo's
    is a 15-minute one."""

    end: int
    baseline_minutes: int = 60
    drift_minutes: int = 15
    fraud_per_minute: int = 240
    sentiment_per_minute: int = 160
    drift_country: str = "BR"
    drift_factor: float = 8.0
    seed: int = 7

    @property
    def start(self) -> int:
        return self.end - 60 * (self.baseline_minutes + self.drift_minutes)

    @property
    def total_calls(self) -> int:
        minutes = self.baseline_minutes + self.drift_minutes
        return minutes * (self.fraud_per_minute + self.sentiment_per_minute)


def service_tracer_provider(endpoint: str, service_name: str) -> TracerProvider:
    """The simulated service's OTel SDK: a batch processor and the OTLP/gRPC exporter.

    The queue is large because replayed traffic is produced far faster than
    real traffic; the SDK would otherwise drop spans.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True),
            max_queue_size=65536,
            max_export_batch_size=1024,
            schedule_delay_millis=200,
        )
    )
    return provider


def simulate(scenario: DemoScenario, provider: TracerProvider, progress: Any = None) -> int:
    """Send the scenario's model calls through ``provider``; return how many were sent."""
    rng = random.Random(scenario.seed)
    fraud = monitor("fraud", version="2.3", tracer_provider=provider)
    sentiment = monitor("sentiment", version="1.0", tracer_provider=provider)
    minutes = scenario.baseline_minutes + scenario.drift_minutes
    sent = 0
    for minute in range(minutes):
        drifting = minute >= scenario.baseline_minutes
        minute_start = scenario.start + 60 * minute
        for _ in range(scenario.fraud_per_minute):
            at = int((minute_start + rng.random() * 60) * NS)
            country = rng.choice(COUNTRIES)
            amount = rng.lognormvariate(3.9, 0.8)
            if drifting and country == scenario.drift_country:
                amount *= scenario.drift_factor
            age = None if rng.random() < 0.03 else rng.randint(1, 3000)
            with fraud.call(start_time=at, end_time=at + 2_000_000) as call:
                call.features(
                    amount=round(amount, 2),
                    country=country,
                    device=rng.choice(["ios", "android", "web"]),
                    account_age_days=age,
                )
                score = 1 / (1 + 2.718 ** (-(amount - 300) / 150))
                call.outputs(score=round(score, 4))
                call.prediction_id(f"tx-{minute}-{sent}")
            sent += 1
        for _ in range(scenario.sentiment_per_minute):
            at = int((minute_start + rng.random() * 60) * NS)
            language = rng.choice(LANGUAGES)
            with sentiment.call(start_time=at, end_time=at + 5_000_000) as call:
                call.features(language=language, text_length=int(rng.expovariate(1 / 120)) + 1)
                call.outputs(label=rng.choice(["positive", "neutral", "negative"]))
                call.metric("confidence", round(rng.betavariate(8, 2), 4))
            sent += 1
        if progress is not None and (minute + 1) % 15 == 0:
            phase = "drift in country=BR" if drifting else "baseline"
            progress(f"  simulated {minute + 1:3d}/{minutes} minutes ({phase}), {sent} calls sent")
            provider.force_flush()
    return sent


def run_demo(data_dir: str | None, as_json: bool = False) -> int:
    """Run the demo in ``data_dir`` (default: a temporary directory, removed after).

    Returns 0 when the detectors found the injected drift, 1 when they did not.
    With ``as_json`` the findings (and the open incidents, ``incidents``) go to stdout as
    JSON and the story to stderr.
    """
    out = sys.stderr if as_json else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    started = time.monotonic()
    if data_dir:
        refusal = _start_afresh(data_dir, say)
        if refusal:
            print(f"segwatch: {refusal}", file=sys.stderr)
            return EXIT_USAGE
    with _store_directory(data_dir) as store_dir:
        collector = Collector(_demo_config(store_dir))
        say(f"segwatch demo: starting a collector on the embedded store {store_dir}")
        collector.start()
        try:
            scenario = _send_traffic(collector, say)
            earlier, table = _run_detectors(collector, scenario, say)
        finally:
            collector.shutdown()
        incidents = _open_incidents(store_dir)
    code = _report(table, len(earlier.rows), scenario, as_json, say, started, incidents)
    say(follow_up(data_dir))
    return code


def follow_up(data_dir: str | None) -> str:
    """The demo's last line: how to see its findings again, or that they are gone."""
    if not data_dir:
        return (f"the demo's temporary store is gone; segwatch demo --data DIR keeps it, "
                f"then segwatch anomalies --config DIR/{DEMO_CONFIG} lists them again")  # fmt: skip
    config = os.path.join(os.path.abspath(data_dir), DEMO_CONFIG)
    return (f"see them again: segwatch anomalies --config {config} (--findings: both "
            f"windows' findings; segwatch report --config {config} draws them)")  # fmt: skip


def _start_afresh(data_dir: str, say: Callable[[str], None]) -> str | None:
    """Make ``data_dir`` an empty store directory marked as the demo's; ``None`` when done,
    else why not (a file, or a directory with other things in it the demo did not make)."""
    path = os.path.abspath(data_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        return f"--data {data_dir}: not a directory"
    if os.path.isdir(path) and os.listdir(path):
        if not os.path.isfile(os.path.join(path, DEMO_MARK)):
            return (f"--data {data_dir}: the directory is not empty and no earlier segwatch "
                    "demo made it; give the demo a new or empty directory")  # fmt: skip
        refuse_if_held(parse_dsn(f"chdb://{path}"))  # a collector on the demo's store
        say(f"segwatch demo: {path} holds an earlier demo's store: starting from an empty one")
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, DEMO_MARK), "w", encoding="utf-8") as mark:
        mark.write("This store was made by segwatch demo; segwatch demo --data on this "
                   "directory empties it and starts again.\n")  # fmt: skip
    with open(os.path.join(path, DEMO_CONFIG), "w", encoding="utf-8") as config:
        config.write(demo_config_yaml(path))
    return None


@contextmanager
def _store_directory(data_dir: str | None) -> Iterator[str]:
    if data_dir:
        yield os.path.abspath(data_dir)
        return
    with tempfile.TemporaryDirectory(prefix="segwatch-demo-") as temporary:
        yield temporary


def demo_config_yaml(store_dir: str) -> str:
    """The demo's config file for the store in ``store_dir`` (made absolute): what the
    commands reading the store need to read it as the demo did. :func:`_demo_config` is
    this file plus the demo's own settings."""
    dsn = json.dumps(f"chdb://{os.path.abspath(store_dir)}")  # a JSON string is YAML
    return f"""\
# segwatch demo's config for its store: with --config and this file, segwatch
# anomalies, detect and report read the store as the demo did.
storage:
  dsn: {dsn}
# Nothing else: the fraud score rises with the amount by design (the demo's simulation),
# a standing gap the bias detector leaves alone (it reports a gap that grows).
"""


def _demo_config(store_dir: str) -> CollectorConfig:
    """:func:`demo_config_yaml`, on loopback ports the system picks, without a scheduler
    (the demo runs the detectors itself)."""
    config = parse_config(demo_config_yaml(store_dir), source="segwatch demo's config")
    return dataclasses.replace(
        config,
        receiver=ReceiverConfig(endpoint="127.0.0.1:0"),
        api=ApiConfig(endpoint="127.0.0.1:0"),
        scheduler=SchedulerConfig(enabled=False),
    )


def _send_traffic(collector: Collector, say: Callable[[str], None]) -> DemoScenario:
    """The simulated service's calls, through the OTel SDK, until the collector stored them."""
    assert collector.receiver is not None and collector.processor is not None
    endpoint = collector.receiver.address
    say(f"  collector listening on {endpoint} (OTLP/gRPC)")
    now = int(time.time())
    # A quarter-hour boundary, where every detector's window ends (bias runs each 15
    # minutes): the same findings whatever the time of day (on a 5-minute one, bias's
    # hour held 15 drifted minutes one run in three, 5 the others).
    scenario = DemoScenario(end=now - now % 900)
    provider = service_tracer_provider(endpoint, "segwatch-demo")
    say(
        f"simulating 2 models over {scenario.baseline_minutes + scenario.drift_minutes} "
        f"minutes of traffic ({scenario.total_calls} calls); amounts grow "
        f"{scenario.drift_factor:g}x for country={scenario.drift_country} in the last "
        f"{scenario.drift_minutes} minutes"
    )
    sent = simulate(scenario, provider, say)
    provider.force_flush()
    provider.shutdown()
    stored = _wait_for(
        lambda: collector.processor.stats.model_calls if collector.processor else 0,
        sent,
        timeout=60,
    )
    collector.flush()  # acknowledged calls wait in the spool for at most a second
    say(f"  collector stored {stored} of {sent} model calls")
    return scenario


def _run_detectors(
    collector: Collector, scenario: DemoScenario, say: Callable[[str], None]
) -> tuple[DetectionResult, DetectionResult]:
    """The detectors for the windows ending with the traffic and 5 minutes before, as the
    scheduler would have run them: a finding in both persists (most detectors open an
    anomaly once found in 2 of their last 3 windows). Both runs' results, the earlier
    first."""
    at = dt.datetime.fromtimestamp(scenario.end, dt.timezone.utc)
    spec = load_manifest()[0]
    say(
        f"running the {len(collector.detectors)} detectors for the windows ending with the "
        f"traffic and 5 minutes before, as the scheduler would have ({spec.name}: the last "
        f"{spec.window // 60} minutes against the {spec.baseline // 60} minutes before)"
    )
    return collector.detect(at - dt.timedelta(minutes=5)), collector.detect(at)


def _open_incidents(store_dir: str) -> list[tuple[str, str, str, list[str]]]:
    """The store's open incidents (the collector has let go of it): (model, root, its
    detector, consequences), the most severe first."""
    client = open_client(parse_dsn(f"chdb://{store_dir}"))
    try:
        rows = client.query(
            "SELECT model_name, concat(root_quantity, ' for ', root_segment_dim, '=', "
            "root_segment_value), root_detector, consequences FROM ml_incidents "
            "WHERE state = 'open' ORDER BY severity DESC"
        ).result_rows
    finally:
        client.close()
    return [(str(m), str(root), str(detector), list(c)) for m, root, detector, c in rows]


def _report(
    table: DetectionResult,
    earlier_findings: int,
    scenario: DemoScenario,
    as_json: bool,
    say: Callable[[str], None],
    started: float,
    incidents: list[tuple[str, str, str, list[str]]],
) -> int:
    found = _found_injected(table, scenario)
    if as_json:
        opened = [{"model": model, "root": root, "root_detector": detector,
                   "consequences": consequences}
                  for model, root, detector, consequences in incidents]  # fmt: skip
        json.dump({**table.to_json(), "incidents": opened}, sys.stdout)
        sys.stdout.write("\n")
    else:
        say("")
        print_table(_demo_view(table), sys.stdout)
    say("\n" + "\n".join(table.summary()) + "\n")
    for model, root, detector, consequences in incidents:
        follows = f"; {len(consequences)} more follow from it: {', '.join(consequences)}"
        say(f"open incident: {model} / {root} ({detector}){follows if consequences else ''}")
    elapsed = time.monotonic() - started
    if found:
        where = "on standard output" if as_json else "above"  # --json: the story is on stderr
        say(
            f"found the injected drift in fraud / country={scenario.drift_country} in "
            f"{elapsed:.0f} s: the {len(table.rows)} findings {where} are the latest windows' "
            f"(ending now); the windows ending 5 minutes earlier found {earlier_findings}; "
            f"{len(incidents)} incident{'' if len(incidents) == 1 else 's'} open"
        )
        return 0
    say(f"the injected drift in country={scenario.drift_country} was NOT found")
    return 1


def _demo_view(table: QueryResult) -> QueryResult:
    keep = ["detector", "model", "segment", "quantity", "score", "threshold", "exemplar_trace_id"]
    index = [table.columns.index(c) for c in keep]
    return QueryResult(keep, [[row[i] for i in index] for row in table.rows])


def _found_injected(table: QueryResult, scenario: DemoScenario) -> bool:
    segment = table.columns.index("segment")
    model = table.columns.index("model")
    wanted = f"feature.country={scenario.drift_country}"
    return any(row[model] == "fraud" and row[segment] == wanted for row in table.rows)


def _wait_for(read: Any, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    value = read()
    while value < target and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return int(value)
