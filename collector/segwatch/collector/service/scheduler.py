"""DetectorScheduler: runs each detector on its cadence inside the collector, each window once
across every collector that shares the store."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.detection import DetectorRun, DetectorSpec, run_detector_group
from segwatch.clickhouse.lease import claim_once, holder_name
from segwatch.clickhouse.queries import (
    add_exemplar_span_ids,
    open_anomaly_counts,
    open_incident_counts,
)
from segwatch.collector.metrics import CollectorMetrics

from .alerts import AnomalyNotifier

__all__ = ["DetectorScheduler"]

_logger = logging.getLogger(__name__)


class DetectorScheduler:
    """Runs every detector once per cadence, for the window that just closed.

    A run starts ``lateness`` seconds after the cadence boundary, so spans of
    the last minute that are still in flight land first; at start, the window
    that closed last runs (``lateness`` after starting) unless it already ran,
    and then the cadence resumes at the next boundary. Several collectors on
    one store each schedule every detector; before running a window, each
    claims it in the store (:func:`~segwatch.clickhouse.lease.claim_once` on
    ``detector:<name>:<window end>``) and only the one that wins runs it, so
    a window runs once and its alerts go out once; the others count it as
    ``skipped``. The anomalies a run opens or resolves go to every notifier
    (OTLP logs, webhooks: see :mod:`.alerts`, one alert per incident). With
    ``metrics``, the thread reads the store's open anomalies and incidents into
    ``segwatch_open_anomalies`` and ``segwatch_open_incidents`` once at start and after every
    turn that had a window due (run, skipped or failed: another collector's
    run may have opened some), so a scrape never waits on the store. One
    thread, and one more per session of ``helpers`` while a turn runs: the
    detectors due together run as a group, their queries on ``client`` and the
    helpers at once (:func:`~segwatch.clickhouse.detection.run_detector_group`). A
    failing detector is logged and its next window runs at the next boundary,
    never crashing the collector.

    A claim is never given back: if the collector that claimed a window fails
    to run it (the detector raises, the store goes away mid-run: counted in
    ``segwatch_detector_failures`` and logged) or is killed while it runs, no
    collector runs that window, and its findings and alerts are missed. Run it
    by hand with ``segwatch detect --at TIME`` (TIME: the cadence boundary the
    run was for), which claims nothing; a window run again adds no duplicate
    rows.
    """

    def __init__(
        self,
        client: Client,
        specs: list[DetectorSpec],
        *,
        lateness: float = 15.0,
        clock: Callable[[], float] = time.time,
        notifiers: Sequence[AnomalyNotifier] = (),
        metrics: CollectorMetrics | None = None,
        holder: str | None = None,
        poll: float = 5.0,
        helpers: Sequence[Client] = (),
    ) -> None:
        self._metrics = metrics
        self._helpers = tuple(helpers)
        self.holder = holder or holder_name("scheduler")  # whom its claims name; one each
        self._client = client
        self._specs = specs
        self._notifiers = list(notifiers)
        self._lateness = lateness
        self._clock = clock
        self._poll = poll  # the longest sleep between two readings of the clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_due: dict[str, float] = {}
        self.runs = 0
        self.failures = 0
        self.skipped = 0  # windows another collector claimed

    def start(self) -> None:
        now = self._clock()
        for spec in self._specs:
            # First the window that closed last, ``lateness`` after starting (a replayed
            # spool lands first): a restart, a deploy, must not skip the window whose
            # boundary passed while no collector ran. If one did run it (this collector
            # before its restart, or another), the claim is taken and the run skipped.
            self._next_due[spec.name] = now + self._lateness
        self._thread = threading.Thread(target=self._run, name="segwatch-scheduler", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for notifier in self._notifiers:
            notifier.close()

    def _run(self) -> None:
        self._read_open_anomalies()
        while not self._stop.is_set():
            now = self._clock()
            due = [spec for spec in self._specs if now >= self._next_due[spec.name]]
            if due:
                self._run_turn(due, now - self._lateness)
                for spec in due:
                    self._next_due[spec.name] = self._due_after(spec, now)
                self._read_open_anomalies()
            wait = min(self._next_due.values(), default=now + 60) - self._clock()
            self._stop.wait(max(min(0.1, self._poll), min(wait, self._poll)))

    def _read_open_anomalies(self) -> None:
        """Refresh ``segwatch_open_anomalies`` and ``segwatch_open_incidents`` from the store;
        on failure keep the last values."""
        if self._metrics is None:
            return
        try:
            anomalies = open_anomaly_counts(self._client)
            incidents = open_incident_counts(self._client)
        except Exception as exc:  # the store away: the next turn reads again
            _logger.warning("reading the open anomalies for /metrics failed: %s", exc)
            return
        self._metrics.open_anomalies.update(anomalies)
        self._metrics.open_incidents.update(incidents)

    def _due_after(self, spec: DetectorSpec, now: float) -> float:
        """When the window after the one a run at ``now`` covered is due: ``lateness`` past
        the next cadence boundary."""
        covered = now - self._lateness
        return covered - covered % spec.cadence + spec.cadence + self._lateness

    def _run_turn(self, due: list[DetectorSpec], at: float) -> None:
        """Run the windows of ``due`` that this collector claims, as one group."""
        when = dt.datetime.fromtimestamp(at, dt.timezone.utc)
        claimed = [spec for spec in due if self._claim(spec, when)]
        try:
            outcomes: list[DetectorRun | Exception] = run_detector_group(
                self._client, claimed, when, self._helpers
            )
        except Exception as exc:  # the group itself broke: every claimed window failed
            outcomes = [exc] * len(claimed)
        for spec, outcome in zip(claimed, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self._failed(spec, when, outcome)
            else:
                self._ran(spec, outcome)

    def _claim(self, spec: DetectorSpec, when: dt.datetime) -> bool:
        """Whether this collector runs the spec's window (another one may have claimed it)."""
        window_end = spec.windows(when)["window_end"].isoformat()
        try:
            claimed = claim_once(self._client, f"detector:{spec.name}:{window_end}", self.holder)
        except Exception as exc:  # the store unreachable: the claim was not ours
            self._failed(spec, when, exc)
            return False
        if not claimed:
            self.skipped += 1
            if self._metrics is not None:
                self._metrics.detector_skipped.labels(spec.name).inc()
            _logger.debug("detector %s, window to %s: another collector runs it",
                          spec.name, window_end)  # fmt: skip
        return claimed

    def _failed(self, spec: DetectorSpec, when: dt.datetime, exc: Exception) -> None:
        # A window this collector claimed is run by no other, and this one does
        # not retry it: its findings are missed (`segwatch detect --at` runs it
        # by hand).
        self.failures += 1
        if self._metrics is not None:
            self._metrics.detector_failures.labels(spec.name).inc()
        window_end = spec.windows(when)["window_end"].isoformat()
        _logger.error("detector %s failed for the window to %s", spec.name, window_end,
                      exc_info=exc)  # fmt: skip

    def _ran(self, spec: DetectorSpec, run: DetectorRun) -> None:
        self.runs += 1
        if self._metrics is not None:
            self._metrics.detector_seconds.labels(spec.name).observe(run.seconds)
            self._metrics.detector_findings.labels(spec.name).inc(len(run.new_anomalies))
            self._metrics.detector_transitions.labels(spec.name, "opened").inc(len(run.opened))
            self._metrics.detector_transitions.labels(spec.name, "resolved").inc(len(run.resolved))
        _logger.info(
            "detector %s: %d findings, %d opened, %d resolved in %.2f s",
            spec.name,
            len(run.new_anomalies),
            len(run.opened),
            len(run.resolved),
            run.seconds,
        )
        transitions = run.opened + run.resolved
        if transitions and self._notifiers:
            try:  # the exemplar's span id, for the OTLP records (trace ids alone are stored)
                add_exemplar_span_ids(self._client, transitions)
            except Exception:
                _logger.exception("reading the exemplars' span ids failed; sending without")
        for notifier in self._notifiers if transitions else ():
            try:
                notifier.notify(transitions)
            except Exception:  # a notifier must not stop the scheduler
                _logger.exception("delivering %d anomaly transitions failed", len(transitions))
