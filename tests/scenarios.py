"""A day of three model deployments with faults injected, for the detectors' quality test.

``simulate_day`` sends 24 hours of calls through the real path — the OTel SDK
(one batch span per model and minute, ``ml.batch.columns``), the collector's
decoder, segmenter and aggregator, the store — for:

* ``fraud`` 2.3 (serving): a tabular classifier; country (25, top 20 kept),
  device, merchant, amount, account age; crosses country × device and country ×
  merchant; output ``score``, metric ``latency_ms``;
* ``fraud`` 2.4 (shadow): the same calls scored by a challenger;
* ``sentiment`` 1 (serving): language, channel, text length; language ×
  channel; output ``label``, metric ``confidence``. Confidence is lower on the
  app channel all day: a bias the config declares expected.

Traffic follows the time of day (±30 %). With ``faults=True`` the faults of
:data:`FAULTS` are injected: each begins ``FAULT_LEAD`` before ``END`` (the
bias is there all day). The values are random but seeded: a run is repeatable.
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
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import monitor

DAY = 86_400
END = 1_800_000_000 - 1_800_000_000 % 3600  # the day ends on the hour
START = END - DAY
FAULT_LEAD = 40 * 60  # faults begin 40 minutes before END

CONFIG_TEXT = """\
models:
  fraud:
    features:
      country: {type: category}
      device: {type: category}
      merchant: {type: category}
      amount: {type: number}
      account_age: {type: number}
    outputs: {score: {type: number}}
    metrics: {latency_ms: {type: number}}
    crosses: [[country, device], [country, merchant]]
  sentiment:
    features:
      language: {type: category, sensitive: true}  # fairness: its standing gaps count
      channel: {type: category}
      text_length: {type: number}
    outputs: {label: {type: category}}
    metrics: {confidence: {type: number}}
    crosses: [[language, channel]]
expected_biases:
  # Short phone texts: the classifier is less sure on the app, by design.
  - {model: sentiment, dimension: channel, quantities: [metric.confidence]}
  # Larger amounts are riskier: the score rises with the amount, by design.
  - {model: fraud, dimension: amount, quantities: [output.score]}
"""


def scenario_config() -> CollectorConfig:
    return parse_config(CONFIG_TEXT, "scenarios.CONFIG_TEXT")


@dataclass(frozen=True)
class Fault:
    """One injected fault and the alert that should name it."""

    name: str
    detector: str
    model: str
    stage: str
    segment_dim: str
    segment_value: str
    quantity: str


FAULTS = (
    Fault("drift in one segment", "psi_drift", "fraud", "serving",
          "feature.country", "BR", "feature.amount"),
    Fault("confidence drop for one language", "metric_shift", "sentiment", "serving",
          "feature.language", "de", "metric.confidence"),
    Fault("missing-rate jump in one category", "data_missing", "fraud", "serving",
          "feature.merchant", "electronics", "feature.account_age"),
    Fault("one segment's traffic vanishes", "volume", "fraud", "serving",
          "feature.country", "FR", "calls"),
    Fault("challenger worse on one segment", "version_drift", "fraud", "shadow",
          "feature.merchant", "travel", "output.score"),
    Fault("a bias nobody declared", "bias", "sentiment", "serving",
          "feature.language", "ja", "metric.confidence"),
)  # fmt: skip

COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "MX", "ES", "IT", "CA", "JP", "AU", "NL",
             "SE", "PL", "TR", "AR", "CO", "ZA", "NG", "KE", "EG", "PH", "VN", "TH"]  # fmt: skip
COUNTRY_WEIGHTS = 1 / np.arange(1, len(COUNTRIES) + 1) ** 0.8
DEVICES, DEVICE_WEIGHTS = ["ios", "android", "web"], [0.35, 0.45, 0.2]
MERCHANTS = ["grocery", "travel", "electronics", "fashion", "gaming", "fuel", "dining",
             "health", "crypto", "other_retail"]  # fmt: skip
MERCHANT_WEIGHTS = [0.2, 0.12, 0.12, 0.12, 0.08, 0.1, 0.12, 0.06, 0.03, 0.05]
LANGUAGES = ["en", "es", "de", "fr", "pt", "it", "ja", "zh", "ko", "ru"]
LANGUAGE_WEIGHTS = [0.3, 0.15, 0.12, 0.1, 0.08, 0.07, 0.07, 0.05, 0.04, 0.02]
CHANNELS, CHANNEL_WEIGHTS = ["web", "app", "email"], [0.5, 0.35, 0.15]
LABELS = ["positive", "negative", "neutral"]


def _pick(rng: np.random.Generator, values: list[str], weights: object, n: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=p / p.sum())]


def _rate(minute: int, per_minute: float) -> float:
    """Calls a minute: the day's rhythm, busiest mid-afternoon (UTC)."""
    return per_minute * (1 + 0.3 * np.sin(2 * np.pi * ((minute - START) / DAY - 0.4)))


def _fraud_minute(rng: np.random.Generator, minute: int, faulty: bool) -> tuple[dict, dict]:
    """One minute of fraud calls: (inputs, {stage: (outputs, metrics)})."""
    active = faulty and minute >= END - FAULT_LEAD
    n = rng.poisson(_rate(minute, 600))
    country = _pick(rng, COUNTRIES, COUNTRY_WEIGHTS, n)
    if active:  # France's traffic vanishes (a routing change drops it)
        keep = country != "FR"
        country, n = country[keep], int(keep.sum())
    merchant = _pick(rng, MERCHANTS, MERCHANT_WEIGHTS, n)
    amount = rng.lognormal(3.5, 1.0, n)
    if active:  # Brazil's amounts arrive in cents: the feature drifts there only
        amount[country == "BR"] *= 100
    age = rng.exponential(400.0, n)
    ages: list[float | None] = age.tolist()
    if active:  # the account service times out for electronics merchants
        for i in np.flatnonzero(merchant == "electronics"):
            ages[i] = None
    inputs = {
        "country": country,
        "device": _pick(rng, DEVICES, DEVICE_WEIGHTS, n),
        "merchant": merchant,
        "amount": amount,
        "account_age": ages,
    }
    logit = -2.0 + 0.4 * (np.log(amount) - 3.5) + rng.normal(0.0, 0.7, n)
    champion = 1 / (1 + np.exp(-logit))
    challenger = 1 / (1 + np.exp(-(logit + rng.normal(0.0, 0.1, n))))
    if active:  # the challenger scores travel far higher
        travel = merchant == "travel"
        challenger[travel] = np.minimum(1.0, challenger[travel] + 0.35)
    return inputs, {
        "serving": ({"score": champion}, {"latency_ms": rng.lognormal(3.0, 0.3, n)}),
        "shadow": ({"score": challenger}, {"latency_ms": rng.lognormal(3.1, 0.3, n)}),
    }


def _sentiment_minute(rng: np.random.Generator, minute: int, faulty: bool) -> tuple[dict, dict]:
    n = rng.poisson(_rate(minute, 400))
    language = _pick(rng, LANGUAGES, LANGUAGE_WEIGHTS, n)
    channel = _pick(rng, CHANNELS, CHANNEL_WEIGHTS, n)
    confidence = rng.normal(0.85, 0.05, n)
    confidence[channel == "app"] -= 0.08  # expected: declared in the config
    if faulty:  # all day: the model is less sure of Japanese texts, and nobody said so
        confidence[language == "ja"] -= 0.08
    if faulty and minute >= END - FAULT_LEAD:  # a German tokenizer update breaks
        confidence[language == "de"] -= 0.15
    inputs = {"language": language, "channel": channel, "text_length": rng.lognormal(4.0, 0.8, n)}
    label = _pick(rng, LABELS, [0.5, 0.3, 0.2], n)
    outputs = {"label": label}
    return inputs, {"serving": (outputs, {"confidence": np.clip(confidence, 0.0, 1.0)})}


DEPLOYMENTS = (
    ("fraud", {"serving": "2.3", "shadow": "2.4"}, _fraud_minute),
    ("sentiment", {"serving": "1"}, _sentiment_minute),
)


def _hours() -> Iterator[range]:
    for hour in range(START, END, 3600):
        yield range(hour, hour + 3600, 60)


def simulate_day(client, *, faults: bool, seed: int = 11) -> int:  # type: ignore[no-untyped-def]
    """Store 24 hours of calls ending at ``END``; returns how many calls were sent."""
    rng = np.random.default_rng(seed)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monitors = {
        (name, stage): monitor(model=name, version=version, stage=stage, tracer_provider=provider)
        for name, versions, _ in DEPLOYMENTS
        for stage, version in versions.items()
    }
    aggregator = SegmentAggregator(SegmentationPlan(scenario_config()))
    exporter = ClickHouseExporter(client)
    exporter.start()
    sent = 0
    try:
        for minutes in _hours():  # one flush an hour, as a collector would flush
            for minute in minutes:
                for name, _, make in DEPLOYMENTS:
                    inputs, per_stage = make(rng, minute, faults)
                    rows = len(inputs[next(iter(inputs))])
                    for stage, (outputs, metrics) in per_stage.items():
                        at = (minute + 30) * 1_000_000_000
                        with monitors[name, stage].call(start_time=at, end_time=at + 1) as call:
                            call.batch(rows, inputs, outputs, metrics)
                        sent += rows
            batch = decode_request(encode_spans(spans.get_finished_spans()))
            spans.clear()
            exporter.submit(aggregator.aggregate(batch)).result(timeout=120)
    finally:
        exporter.shutdown()
        provider.shutdown()
    return sent
