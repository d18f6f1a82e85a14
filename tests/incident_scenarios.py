"""Traffic with one injected fault per model, for the incidents' acceptance test.

Each model is one (scenario, seed): ``feature-3`` is the seed-3 run of the
``feature`` scenario. All of them share one store and one detector run per
window (a seed is a model, so a run tests every seed at once). Every model
scores its calls from its inputs — amount, country, device, account age —
so segments differ all the time, as real models' do: that is the model
working, not a fault. The scenarios, each fault beginning ``FAULT_LEAD``
before ``END``:

* ``feature`` — the amount falls by half for ``country=BR`` (a pipeline
  change there), and the score with it;
* ``context`` — the upstream language detector mislabels texts as ``es``
  (the ``language`` context, from baggage): the model's confidence sags there;
* ``missing`` — the account service times out for ``device=android``: the
  account age goes missing there;
* ``version`` — the canary ``2`` scores web calls far higher than the champion;
* ``clean`` — nothing happens.

The calls go the real way from the SDK on: OTel batch spans
(``ml.batch.columns``), the collector's decoder, segmenter and aggregator,
the store (aggregates and raw calls).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config import CollectorConfig, parse_config
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.collector.store.call_rows import call_rows
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import context, monitor

END = 1_800_000_000 - 1_800_000_000 % 3600  # on the hour: every cadence's boundary
HOURS = 2.5  # metric_shift needs 8 trailing windows of 15 minutes; psi_drift one hour
START = END - int(HOURS * 3600)
FAULT_LEAD = 40 * 60
PER_MINUTE = 200

COUNTRIES = ["US", "BR", "DE", "IN", "MX", "FR", "JP", "NG"]
COUNTRY_WEIGHTS = [0.3, 0.18, 0.12, 0.12, 0.1, 0.08, 0.06, 0.04]
COUNTRY_RISK = dict(zip(COUNTRIES, [0.0, 0.6, -0.3, 0.4, 0.5, -0.2, -0.5, 0.9], strict=True))
DEVICES, DEVICE_WEIGHTS = ["ios", "android", "web"], [0.35, 0.45, 0.2]
DEVICE_RISK = {"ios": -0.2, "android": 0.1, "web": 0.5}
LANGUAGES, LANGUAGE_WEIGHTS = ["en", "es", "pt", "de"], [0.45, 0.25, 0.2, 0.1]
LANGUAGE_SURENESS = {"en": 0.88, "es": 0.84, "pt": 0.8, "de": 0.86}


@dataclass(frozen=True)
class Fault:
    """An injected fault: the root its incident must name."""

    scenario: str
    segment_dim: str
    segment_value: str
    quantity: str


FAULTS = (
    Fault("feature", "feature.country", "BR", "feature.amount"),
    Fault("context", "context.language", "es", "metric.confidence"),
    Fault("missing", "feature.device", "android", "feature.account_age"),
    Fault("version", "feature.device", "web", "output.score"),
)
SCENARIOS = (*(f.scenario for f in FAULTS), "clean")
SEEDS = (1, 2, 3, 4, 5)


def model_name(scenario: str, seed: int) -> str:
    return f"{scenario}-{seed}"


def config_text(models: list[str]) -> str:
    """Every model declared alike; no expected bias (a score depending on its inputs
    must not need one)."""
    fields = (
        "    features:\n"
        "      country: {type: category}\n"
        "      device: {type: category}\n"
        "      amount: {type: number}\n"
        "      account_age: {type: number}\n"
        "    outputs: {score: {type: number}}\n"
        "    metrics: {confidence: {type: number}}\n"
        "    contexts: [language]\n"
    )
    return "contexts:\n  language: {type: category}\nmodels:\n" + "".join(
        f"  {m}:\n{fields}" for m in models
    )


def scenario_config(models: list[str]) -> CollectorConfig:
    return parse_config(config_text(models), "incident_scenarios.config_text")


def _pick(rng: np.random.Generator, values: list[str], weights: list[float], n: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=p / p.sum())]


def _minute(rng: np.random.Generator, scenario: str, faulty: bool) -> dict[str, dict]:
    """One minute of one model's calls: {language: {inputs, outputs by version, metrics}}."""
    n = int(rng.poisson(PER_MINUTE))
    country = _pick(rng, COUNTRIES, COUNTRY_WEIGHTS, n)
    device = _pick(rng, DEVICES, DEVICE_WEIGHTS, n)
    language = _pick(rng, LANGUAGES, LANGUAGE_WEIGHTS, n)
    amount = rng.lognormal(3.5, 1.0, n)
    age = rng.exponential(400.0, n)
    if faulty and scenario == "feature":
        amount[country == "BR"] *= 0.5
    ages: list[float | None] = age.tolist()
    if faulty and scenario == "missing":
        for i in np.flatnonzero(device == "android"):
            ages[i] = None
    logit = (-2.0 + 0.5 * (np.log(amount) - 3.5) - 0.3 * (np.log1p(age) - 5.5)
             + np.array([COUNTRY_RISK[c] for c in country])
             + np.array([DEVICE_RISK[d] for d in device]) + rng.normal(0.0, 0.5, n))  # fmt: skip
    score = 1 / (1 + np.exp(-logit))
    canary = 1 / (1 + np.exp(-(logit + rng.normal(0.0, 0.1, n))))
    if faulty and scenario == "version":
        canary[device == "web"] = np.minimum(1.0, canary[device == "web"] + 0.3)
    sureness = np.array([LANGUAGE_SURENESS[x] for x in language])
    confidence = sureness - 0.1 * np.abs(score - 0.5) + rng.normal(0.0, 0.04, n)
    if faulty and scenario == "context":
        confidence[language == "es"] -= 0.1
    by_language = {}
    for lang in LANGUAGES:
        rows = language == lang
        by_language[lang] = {
            "inputs": {"country": country[rows], "device": device[rows], "amount": amount[rows],
                       "account_age": [a for a, r in zip(ages, rows, strict=True) if r]},
            "score": {"1": score[rows], "2": canary[rows]},
            "confidence": np.clip(confidence[rows], 0.0, 1.0),
        }  # fmt: skip
    return by_language


def _hours() -> Iterator[range]:
    for hour in range(START, END, 3600):
        yield range(hour, min(hour + 3600, END), 60)


def simulate(client, seeds: tuple[int, ...] = SEEDS) -> int:  # type: ignore[no-untyped-def]
    """Store every scenario's traffic for each seed; returns how many calls were sent."""
    models = [(s, seed, model_name(s, seed)) for s in SCENARIOS for seed in seeds]
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    deployments = {
        (name, version): monitor(model=name, version=version, stage=stage,
                                 tracer_provider=provider)
        for scenario, _, name in models
        for version, stage in (("1", "serving"), ("2", "canary"))
        if version == "1" or scenario == "version"
    }  # fmt: skip
    aggregator = SegmentAggregator(SegmentationPlan(scenario_config([m for *_, m in models])))
    exporter = ClickHouseExporter(client)
    exporter.start()
    rngs = {name: np.random.default_rng(1000 * seed + SCENARIOS.index(s))
            for s, seed, name in models}  # fmt: skip
    sent = 0
    try:
        for minutes in _hours():  # one flush an hour, as a collector would flush
            for minute in minutes:
                at = (minute + 30) * 1_000_000_000
                for scenario, _, name in models:
                    calls = _minute(rngs[name], scenario, minute >= END - FAULT_LEAD)
                    for lang, part in calls.items():
                        rows = len(part["inputs"]["country"])
                        for (model, version), deployment in deployments.items():
                            if model != name:
                                continue
                            with (
                                context(language=lang),
                                deployment.call(start_time=at, end_time=at + 1) as call,
                            ):
                                call.batch(rows, part["inputs"], {"score": part["score"][version]},
                                           {"confidence": part["confidence"]})  # fmt: skip
                            sent += rows
            batch = decode_request(encode_spans(spans.get_finished_spans()))
            spans.clear()
            exporter.submit(aggregator.aggregate(batch), call_rows(batch)).result(timeout=300)
    finally:
        exporter.shutdown()
        provider.shutdown()
    return sent
