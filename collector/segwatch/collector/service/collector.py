"""Collector: builds the pipeline from a config and runs it.

receiver → processor (decode, segment, aggregate) → exporter → ClickHouse,
plus the detector scheduler, the local API and, with ``serve.in_collector``,
ClickHouse's HTTP interface on its embedded store. Components are built with
their next consumer and started in reverse order of the data flow, so nothing
is accepted before its consumer is ready; shutdown goes the other way.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, fields
from typing import Any

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.migrate import require_migrated
from segwatch.clickhouse.store import StoreError, parse_dsn, redact_dsn
from segwatch.collector import kernels
from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.detector_specs import configured_detectors
from segwatch.collector.durable.dead_letters import DeadLetters, open_settled
from segwatch.collector.durable.processor import ModelCallProcessor
from segwatch.collector.durable.spool import Spool
from segwatch.collector.durable.spool_admin import send_back, spool_directory
from segwatch.collector.metrics import CollectorMetrics
from segwatch.collector.profile.profiles import refresh_quantile_buckets
from segwatch.collector.receive.receiver import OTLPReceiver
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.collector.serve import ClickHouseDoor
from segwatch.collector.store.connection import StoreConnection, StoreUnreachableError
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.collector.store.part_durability import set_part_durability
from segwatch.collector.store.settings import check_store_settings

from .alerts import notifiers
from .analyst_queries import AnalystQueries, QueryBudget
from .api import LocalApi
from .detect import DetectionResult
from .discovery import (
    discovery_path,
    refuse_if_held,
    refuse_if_locked,
    remove_own_discovery,
    write_discovery,
)
from .scheduler import DetectorScheduler
from .serving import set_up_store

__all__ = ["Collector"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Clients:
    exporter: Client
    scheduler: Client
    api: Client
    control: Client  # cancels analysts' queries (KILL QUERY)
    detectors: Client  # the scheduler's second session: two detector queries at once


_SESSIONS = len(fields(_Clients))


def _warn_if_not_compiled() -> None:
    if kernels.NUMPY_FORCED:
        _logger.info("SEGWATCH_KERNELS=numpy: decoding and aggregating with numpy, not C")
    elif not kernels.COMPILED:
        _logger.warning(
            "the compiled loops (%s) are not in use (not built, or built for another ABI: "
            "see the warning above, if any): decoding and aggregating with numpy, several times "
            "slower; reinstall with a C compiler",
            kernels.LIBRARY.name,
        )


class Collector:
    """The whole collector process, as one object with ``start()`` / ``shutdown()``."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.location = parse_dsn(config.storage.dsn)
        self.detectors = configured_detectors(config)
        self.plan = SegmentationPlan(config)
        self._store: StoreConnection | None = None
        self._clients: _Clients | None = None
        self.exporter: ClickHouseExporter | None = None
        self.processor: ModelCallProcessor | None = None
        self.spool: Spool | None = None
        self.receiver: OTLPReceiver | None = None
        self.scheduler: DetectorScheduler | None = None
        self.api: LocalApi | None = None
        self.door: ClickHouseDoor | None = None
        self.metrics = CollectorMetrics()
        self.metrics.read_from(self._metric_values)

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.shutdown()
            raise

    def _start(self) -> None:
        """Build and start the components, each after the consumer it feeds."""
        _warn_if_not_compiled()
        # A collector or segwatch serve announces itself there: refused. A process that
        # does not is an outage (see _connect_store).
        refuse_if_held(self.location, locked_too=False)
        # The spool first: with it, acknowledging needs no store.
        self.spool = self._open_spool()
        queries = self._connect_store()
        self._start_pipeline()
        self._start_scheduler()
        self._start_api(queries)
        self._start_door()
        self._start_receiver()
        self._write_discovery()
        assert self.receiver is not None and self.api is not None
        _logger.info(
            "collector listening on %s (OTLP/gRPC), API on %s, store %s%s",
            self.receiver.address,
            self.api.url,
            self.location.path or redact_dsn(self.location.dsn),
            f", ClickHouse HTTP interface on {self.door.url}" if self.door else "",
        )

    def _connect_store(self) -> AnalystQueries:
        """Open the store's clients (one per component) and the analysts' query sessions.

        Each client runs its queries on its own thread. They open the store
        together; one that is unreachable now is opened once it is back. Without
        a spool the store must answer now: nothing could be acknowledged.
        """
        budget = QueryBudget.of(self.config.api)
        query_sessions = budget.sessions()  # readonly=1, each on the budget
        self._store = StoreConnection(
            self.location, [*({} for _ in range(_SESSIONS)), *query_sessions],
            self._set_up_store, self._store_back,
            before_open=lambda: refuse_if_locked(self.location),  # one line, not the engine's
        )  # fmt: skip
        self._clients = _Clients(*(self._store.client(i) for i in range(_SESSIONS)))
        analysts = [
            (session["log_comment"], self._store.client(_SESSIONS + i))
            for i, session in enumerate(query_sessions)
        ]
        queries = AnalystQueries(
            analysts,
            self._clients.control,
            budget,
        )
        if not self._store.connect() and self.spool is None:
            raise StoreUnreachableError(
                f"the store is unreachable ({self._store.problem}) and there is no spool to "
                "hold what would be acknowledged meanwhile"
            )
        return queries

    def _start_pipeline(self) -> None:
        """The exporter, then the processor that feeds it; then what the spool holds, replayed."""
        config = self.config
        assert self._clients is not None
        self.exporter = ClickHouseExporter(self._clients.exporter, self.metrics)
        self.exporter.start()
        self.processor = ModelCallProcessor(
            SegmentAggregator(self.plan),
            self.exporter,
            spool=self.spool,
            raw_calls=config.storage.raw_calls,
            traces=config.storage.traces,
            flushing=config.storage.spool,
            allowed_lateness=config.receiver.allowed_lateness,
            allowed_skew=config.receiver.allowed_skew,
            limits=config.receiver.limits,
            max_models=config.segments.max_models,
        )
        self.processor.start()
        if self.spool is not None:
            # A flush set aside just before a crash is a dead letter, not to be replayed.
            records, interrupted = open_settled(self.spool)
            replayed = self.processor.replay(records, interrupted)
            if replayed:
                _logger.info("replayed %d model calls from the spool", replayed)

    def _start_scheduler(self) -> None:
        if not self.config.scheduler.enabled:
            return
        assert self._clients is not None
        self.scheduler = DetectorScheduler(
            self._clients.scheduler,
            self.detectors,
            notifiers=notifiers(self.config.alerts),
            metrics=self.metrics,
            helpers=[self._clients.detectors],
        )
        self.scheduler.start()

    def _start_api(self, queries: AnalystQueries) -> None:
        config = self.config
        assert self._clients is not None
        self.api = LocalApi(
            config.api.endpoint,
            self._clients.api,
            self.status,
            self.detectors,
            config,
            queries=queries,
            requeue=self.requeue_dead_letters,
            before_read=self.flush,
            on_baseline=lambda: refresh_quantile_buckets(self._clients.api, self.plan),  # type: ignore[union-attr]
            token=os.environ.get(config.api.token_env) or None,
            readiness=self.readiness,
            metrics=self.metrics.exposition,
        )
        self.api.start()

    def _start_receiver(self) -> None:
        """The OTLP receiver last: nothing is accepted before the pipeline behind it is ready."""
        config = self.config
        assert self.processor is not None
        self.receiver = OTLPReceiver(
            config.receiver.endpoint,
            self.processor,
            config.receiver.max_workers,
            max_message_bytes=config.receiver.limits.max_message_mib << 20,
            tls=config.receiver.tls,
            token=os.environ.get(config.receiver.token_env) or None,
            metrics=self.metrics,
            insecure=config.receiver.insecure,
        )
        self.receiver.start()

    def _set_up_store(self, client: Client) -> None:
        """Bring a newly opened store up to date before anything else uses it.

        An embedded store is this process's alone: it migrates it. A server's
        store is shared with other collectors, so migrations are for ``segwatch
        migrate`` (one runner at a time, never N collectors racing): until it
        ran, the store counts as unreachable, and what is acknowledged waits in
        the spool.
        """
        if self.location.embedded:
            set_up_store(client, self.config)
        else:
            require_migrated(client)
            check_store_settings(client, self.config)
            set_part_durability(client, self.config.storage.fsync_parts)
        refresh_quantile_buckets(client, self.plan)

    def _start_door(self) -> None:
        """ClickHouse's HTTP interface on this collector's embedded store (serve.in_collector)."""
        if not self.config.serve.in_collector:
            return
        if not self.location.embedded:
            raise StoreError(
                "serve.in_collector serves the collector's embedded store; with "
                f"{redact_dsn(self.location.dsn)} the server already speaks that interface"
            )
        if self._store is None or self._store.problem:
            raise StoreError("serve.in_collector needs the store open at start: "
                             f"{self._store.problem if self._store else 'not opened'}")  # fmt: skip
        self.door = ClickHouseDoor(self.config.serve, self.location.path)
        self.door.start()

    def _store_back(self) -> None:
        if self.processor is not None:
            self.processor.buffer.retry_now()

    def _open_spool(self) -> Spool | None:
        path = spool_directory(self.config)
        if path is None:
            return None  # acknowledged means stored
        return Spool(path, max_bytes=self.config.storage.spool.max_mib << 20)

    def flush(self, timeout: float = 60.0) -> None:
        """Return once every model call acknowledged so far is in the store."""
        if self._store is not None and self._store.problem:
            raise StoreUnreachableError(f"the store is unreachable: {self._store.problem}")
        if self.processor is not None:
            self.processor.flush(timeout)

    def requeue_dead_letters(self, names: list[str]) -> int:
        """Send the named dead letters back into the running spool; the calls they hold."""
        if self.spool is None or self.processor is None:
            raise ValueError("this collector has no spool")
        return send_back(DeadLetters(self.spool.directory), names, self.processor.requeue)

    def readiness(self) -> list[str]:
        """What keeps the collector from taking data now; empty when it is ready."""
        problems = []
        if self.receiver is None or self.receiver.port is None:
            problems.append("the OTLP receiver is not listening")
        if self._store is not None and self._store.problem:
            problems.append(
                f"the store is unreachable ({self._store.problem}); acknowledged data waits "
                "in the spool"
            )
        elif self.processor is not None and self.processor.buffer.store_failing:
            error = self.exporter.stats.last_error if self.exporter else ""
            problems.append(f"the store refuses inserts ({error}); data waits in the spool")
        if self.spool is not None and self.spool.unflushed_bytes > 0.9 * self.spool.max_bytes:
            problems.append("the spool is over 90 % full: requests will be refused")
        return problems

    def _metric_values(self) -> dict[str, Any]:
        stats = self.processor.stats if self.processor else None
        buffer = self.processor.buffer if self.processor else None
        return {
            "model_calls": stats.model_calls if stats else 0,
            "rejected_spans": stats.rejected_spans if stats else 0,
            "rejected_by": dict(stats.rejected_by) if stats else {},
            "spool_bytes": self.spool.unflushed_bytes if self.spool else 0,
            "pending_calls": buffer.held_calls if buffer else 0,  # the flush written too
            "spilled": int(buffer.spilling) if buffer else 0,
            "dead_letters": buffer.dead_letters if buffer else 0,
            "dead_letter_calls": buffer.dead_letter_calls if buffer else 0,
            "spans_lost": buffer.spans_lost if buffer else 0,
        }

    def status(self) -> dict[str, Any]:
        stats = self.processor.stats if self.processor else None
        return {
            "receiver": self.receiver.address if self.receiver else None,
            "store": self.location.path or "memory" if self.location.embedded else "server",
            "requests": stats.requests if stats else 0,
            "model_calls": stats.model_calls if stats else 0,
            "rejected_spans": stats.rejected_spans if stats else 0,
            "rejected_by_reason": dict(stats.rejected_by) if stats else {},
            "detector_runs": self.scheduler.runs if self.scheduler else 0,
            "folded_into_other": {
                f"{model}/{dimension}": rows
                for (model, dimension), rows in sorted(self.processor.aggregator.folded.items())
            }
            if self.processor
            else {},
        }

    def _write_discovery(self) -> None:
        path = discovery_path(self.location)
        if path is None or self.api is None:
            return
        otlp = self.receiver.address if self.receiver else None
        info = {"api": self.api.local_url, "token": self.api.token, "otlp_grpc": otlp}
        if self.door is not None:
            info["serve"] = self.door.url
        write_discovery(path, info)

    def detect(self, at: dt.datetime | None = None) -> DetectionResult:
        """Run the configured detectors now, for the windows ending ``at``; the new findings.

        Everything acknowledged is flushed first; runs through the local API's
        client, one request at a time with the API's own.
        """
        if self.api is None:
            raise RuntimeError("the collector is not started")
        return self.api.detect(at)

    def shutdown(self) -> int:
        """Stop accepting, finish what was accepted, stop the rest; safe to call twice.

        Returns how many acknowledged model calls the store did not take (they
        stay in the spool for the next start); 0 when everything is stored.
        """
        left = 0
        path = discovery_path(self.location)
        if path is not None:
            remove_own_discovery(path)
        if self.receiver is not None:
            self.receiver.shutdown()
            self.receiver = None
        if self.api is not None:
            self.api.shutdown()
            self.api = None
        if self.door is not None:
            self.door.shutdown()
            self.door = None
        if self.scheduler is not None:
            self.scheduler.shutdown()
            self.scheduler = None
        if self.processor is not None:
            self.processor.shutdown()  # flushes what the receiver accepted
            left = self.processor.buffer.unstored_calls
            if left:
                why = (self._store.problem if self._store else None) or (
                    self.exporter.stats.last_error if self.exporter else ""
                )
                _logger.warning(
                    "%d acknowledged model calls stay in the spool for the next start: the "
                    "store did not take them (%s)",
                    left,
                    why or "unknown error",
                )
            self.processor = None
        if self.exporter is not None:
            self.exporter.shutdown()
            self.exporter = None
        if self.spool is not None:
            letters = DeadLetters(self.spool.directory)
            waiting = letters.list()
            if waiting:
                _logger.warning(
                    "%d dead letters (%d model calls) wait in %s, not in the store: "
                    "'segwatch spool' lists them, 'segwatch spool requeue' sends them back",
                    len(waiting),
                    sum(letter.calls for letter in waiting),
                    letters.directory,
                )
            self.spool.close()
            self.spool = None
        if self._store is not None:
            self._store.close()
            self._store = None
            _logger.info("collector stopped")
        self._clients = None
        return left
