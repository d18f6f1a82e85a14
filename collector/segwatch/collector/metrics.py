"""CollectorMetrics: the collector's own Prometheus metrics, served at ``/metrics``.

One registry per collector (never the global one: two collectors in one
process, as in the tests, must not share counters). Components get the
object when they are built and record what only they see (answers, insert
latency, detector runs); what already lives in their counters (spans
accepted and rejected, spool bytes, calls waiting) is read when Prometheus
scrapes, so the hot path pays nothing for it. What lives in the store (the
open anomalies) is read by the scheduler's thread and kept here, so a scrape
never waits on the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "CollectorMetrics",
    "OpenAnomalyKey",
    "StoreCounts",
    "open_anomalies_gauge",
    "open_incidents_gauge",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    """Counters and gauges read from the components at scrape time."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        state = self._read()
        received = CounterMetricFamily(
            "segwatch_spans_received",
            "Model calls received, accepted or rejected (a batch span counts its calls).",
        )
        received.add_metric([], state["model_calls"] + state["rejected_spans"])
        yield received
        accepted = CounterMetricFamily(
            "segwatch_spans_accepted", "Model calls accepted (acknowledged as durable)."
        )
        accepted.add_metric([], state["model_calls"])
        yield accepted
        rejected = CounterMetricFamily(
            "segwatch_spans_rejected",
            "Model-call spans rejected (counted in OTLP partial success), by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(state["rejected_by"].items()):
            rejected.add_metric([reason], count)
        yield rejected
        for name, help_text in (
            ("dead_letter_flushes", "Flushes set aside as dead letters (failing, store up)."),
            ("dead_letter_calls", "Model calls in the flushes set aside as dead letters."),
        ):
            counter = CounterMetricFamily(f"segwatch_{name}", help_text)
            counter.add_metric([], state[name.replace("_flushes", "s")])
            yield counter
        lost = CounterMetricFamily(
            "segwatch_otel_traces_spans_lost",
            "Spans for otel_traces not stored: their insert failed, or their request could "
            "not be read back from the spool (spans are best effort; the aggregates and "
            "calls of their flush are stored).",
        )
        lost.add_metric([], state["spans_lost"])
        yield lost
        for name, help_text in (
            ("spool_bytes", "Bytes in the spool not yet in the store."),
            ("pending_calls", "Model calls held in memory, waiting for the store."),
            ("spilled", "1 while acknowledged calls wait in the spool only (store behind)."),
        ):
            gauge = GaugeMetricFamily(f"segwatch_{name}", help_text)
            gauge.add_metric([], state[name])
            yield gauge


StoreCountKey = tuple[str, ...]
"""The label values of one :class:`StoreCounts` series, in its labels' order."""
OpenAnomalyKey = tuple[str, str, str]
"""(model, detector, segment dimension): the labels of ``segwatch_open_anomalies``."""


class StoreCounts(Collector):
    """A gauge of things open in the store: ``segwatch_open_anomalies{model, detector,
    segment_dim}`` (anomalies whose latest transition in ``ml_anomaly_events`` is
    ``open``) and ``segwatch_open_incidents{model, root_detector}`` (incidents with an
    open anomaly, ``ml_incidents``).

    The value is store-wide, whichever collector's run opened them, as the
    scheduler last read them (after each of its turns and once at its start;
    :meth:`update`). Several collectors on one store each report the same
    number, so a rule aggregates them with ``max``, never ``sum``. A label set
    once reported stays, at 0 once its anomalies resolve (a series that vanished
    would read as "no data", not "resolved"); the label values are the config's
    models, detectors and segment dimensions, so their number is bounded.
    Nothing is reported before the first read.
    """

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name, self._help, self._labels = name, help_text, list(labels)
        self._lock = threading.Lock()
        self._counts: dict[StoreCountKey, int] = {}

    def update(self, counts: Mapping[StoreCountKey, int]) -> None:
        """Set the counts just read from the store; keys not in ``counts`` drop to 0.

        Called from the scheduler's thread; a scrape reads under the same lock."""
        with self._lock:
            self._counts = {key: 0 for key in self._counts} | dict(counts)

    def collect(self) -> Iterator[Any]:
        gauge = GaugeMetricFamily(self.name, self._help, labels=self._labels)
        with self._lock:
            counts = sorted(self._counts.items())
        for key, count in counts:
            gauge.add_metric(list(key), count)
        yield gauge


def open_anomalies_gauge() -> StoreCounts:
    return StoreCounts(
        "segwatch_open_anomalies",
        "Anomalies open in the store (latest transition in ml_anomaly_events is open), "
        "by model, detector and segment dimension; store-wide, read by the scheduler "
        "after each run and at start: with several collectors on a store, take the max.",
        ("model", "detector", "segment_dim"),
    )


def open_incidents_gauge() -> StoreCounts:
    return StoreCounts(
        "segwatch_open_incidents",
        "Incidents open in the store (one per fault: the anomalies that share a cause, "
        "ml_incidents), by model and the detector of their root; store-wide, read by the "
        "scheduler after each run and at start: with several collectors on a store, take "
        "the max.",
        ("model", "root_detector"),
    )


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.open_anomalies = open_anomalies_gauge()
        self.registry.register(self.open_anomalies)
        self.open_incidents = open_incidents_gauge()
        self.registry.register(self.open_incidents)
        self.requests = Counter(
            "segwatch_otlp_requests",
            "OTLP export requests answered, by signal and gRPC status code.",
            ["signal", "code"],
            registry=self.registry,
        )
        self.inserts = Histogram(
            "segwatch_store_insert_seconds",
            "Time to write one flush to the store.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.insert_failures = Counter(
            "segwatch_store_insert_failures", "Flushes the store refused.", registry=self.registry
        )
        self.detector_seconds = Histogram(
            "segwatch_detector_run_seconds",
            "Time of one scheduled detector run, start to end (the runs of one turn overlap).",
            ["detector"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.detector_findings = Counter(
            "segwatch_detector_findings",
            "Findings of scheduled detector runs, by detector.",
            ["detector"],
            registry=self.registry,
        )
        self.detector_transitions = Counter(
            "segwatch_detector_transitions",
            "Anomalies opened or resolved by scheduled runs.",
            ["detector", "transition"],
            registry=self.registry,
        )
        self.detector_failures = Counter(
            "segwatch_detector_failures",
            "Scheduled detector runs that failed.",
            ["detector"],
            registry=self.registry,
        )
        self.detector_skipped = Counter(
            "segwatch_detector_skipped",
            "Scheduled detector windows skipped: another collector on the store claimed them.",
            ["detector"],
            registry=self.registry,
        )

    def read_from(self, read: Callable[[], dict[str, Any]]) -> None:
        """Add the scrape-time values (see :class:`_Snapshot` for the keys ``read`` returns)."""
        self.registry.register(_Snapshot(read))

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
