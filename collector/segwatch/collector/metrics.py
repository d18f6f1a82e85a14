"""CollectorMetrics: the collector's own Prometheus metrics, served at ``/metrics``.

One registry per collector (never the global one: two collectors in one
process, as in the tests, must not share counters). Components get the
object when they are built and record what only they see (answers, insert
latency, detector runs); what already lives in their counters (spans
accepted and rejected, spool bytes, calls waiting) is read when Prometheus
scrapes, so the hot path pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "CollectorMetrics"]

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
        for name, help_text in (
            ("spool_bytes", "Bytes in the spool not yet in the store."),
            ("pending_calls", "Model calls held in memory, waiting for the store."),
            ("spilled", "1 while acknowledged calls wait in the spool only (store behind)."),
        ):
            gauge = GaugeMetricFamily(f"segwatch_{name}", help_text)
            gauge.add_metric([], state[name])
            yield gauge


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
            "Time of one scheduled detector run.",
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
