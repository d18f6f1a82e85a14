"""Anomalies going out: OTLP log records and webhooks, when an anomaly opens or resolves.

Each transition a detector run records (``ml_anomaly_events``) belongs to an
incident (:mod:`segwatch.clickhouse.incidents`: the anomalies that share a
cause). One fault, one alert:

* :class:`OtlpAnomalyExporter` — one OTLP/gRPC ``LogsService/Export`` per
  batch to ``alerts.otlp.endpoint``: a log record per transition, event name
  ``ml.anomaly``, the body the anomaly's sentence, the exemplar's trace and span id,
  ``ml.anomaly.*``, ``ml.incident.*`` and ``ml.model.*`` attributes; severity
  WARN for the transition that opens an incident, INFO for the others (a
  consequence joining, an anomaly resolving), so a backend alerting on WARN
  alerts once per incident. The transport is the OTel SDK's
  ``OTLPLogExporter``, so it behaves as every OTLP exporter does: TLS for an
  ``https://`` endpoint (``OTEL_EXPORTER_OTLP_[LOGS_]CERTIFICATE`` for a private
  CA, plus client certificate and key for mutual TLS), headers from
  ``OTEL_EXPORTER_OTLP_[LOGS_]HEADERS`` (e.g. ``authorization=Bearer%20...``),
  compression and timeout from their ``OTEL_EXPORTER_OTLP_*`` variables, and
  retryable gRPC codes retried with jittered exponential backoff within the
  timeout, honouring the server's ``RetryInfo`` delay (read from the
  ``google.rpc.retryinfo-bin`` trailer, where the Python SDK looks).
* :class:`WebhookNotifier` — one JSON ``POST`` per incident that opens or
  resolves (not per anomaly), with a Slack-compatible ``text`` field (the
  incident's root and what follows from it) and the anomaly's fields; retried on
  connection errors, 429 and 5xx; at most ``per_minute`` posts a minute per
  webhook (the rest are counted as dropped, and logged), so a bad hour does
  not flood a channel.

Delivery never raises into the detector run: failures are logged and counted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

from segwatch.clickhouse.queries import json_value

__all__ = [
    "AnomalyNotifier",
    "OtlpAnomalyExporter",
    "WebhookNotifier",
    "anomaly_log_records",
    "notifiers",
]

if TYPE_CHECKING:
    from segwatch.collector.config.alerts import AlertsConfig

_logger = logging.getLogger(__name__)

EVENT_NAME = "ml.anomaly"


class AnomalyNotifier(Protocol):
    """Delivers anomaly transitions somewhere; must not raise."""

    def notify(self, transitions: Sequence[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


def _value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def _nanos(moment: Any) -> int:
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return int(moment.timestamp()) * 1_000_000_000
    return 0


def anomaly_log_records(transitions: Sequence[dict[str, Any]]) -> list[LogRecord]:
    """One OTLP log record per transition (see the module docstring)."""
    records = []
    now = time.time_ns()
    for t in transitions:
        attributes = {
            "ml.model.name": t["model_name"],
            "ml.model.version": t["model_version"],
            "ml.model.stage": t["model_stage"],
            "ml.anomaly.state": t["state"],
            "ml.anomaly.detector": t["detector"],
            "ml.anomaly.segment.dimension": t["segment_dim"],
            "ml.anomaly.segment.value": t["segment_value"],
            "ml.anomaly.quantity": t["quantity"],
            "ml.anomaly.score": float(t["score"]),
            "ml.anomaly.threshold": float(t["threshold"]),
            "ml.anomaly.support": int(t["support"]),
            "ml.anomaly.window.start": str(t["window_start"]),
            "ml.anomaly.window.end": str(t["window_end"]),
        }
        if t.get("incident_id"):
            attributes["ml.incident.id"] = t["incident_id"]
            attributes["ml.incident.role"] = t["incident_role"]
        # WARN opens an incident (or an anomaly recorded before incidents were)
        warn = t["state"] == "open" and (t.get("incident_alert") or not t.get("incident_id"))
        if t.get("p_value") is not None:
            attributes["ml.anomaly.p_value"] = float(t["p_value"])
        trace_ids = t.get("exemplar_trace_ids") or []
        try:
            trace_id = bytes.fromhex(trace_ids[0]) if trace_ids else b""
        except ValueError:
            trace_id = b""
        try:
            span_id = bytes.fromhex(t.get("exemplar_span_id") or "")
        except ValueError:
            span_id = b""
        records.append(LogRecord(
            time_unix_nano=_nanos(t["window_end"]),
            observed_time_unix_nano=now,
            severity_number=(SeverityNumber.SEVERITY_NUMBER_WARN if warn
                             else SeverityNumber.SEVERITY_NUMBER_INFO),
            severity_text="WARN" if warn else "INFO",
            event_name=EVENT_NAME,
            body=AnyValue(string_value=str(t["details"])),
            attributes=[KeyValue(key=k, value=_value(v)) for k, v in attributes.items()],
            trace_id=trace_id if len(trace_id) == 16 else b"",
            span_id=span_id if len(trace_id) == 16 and len(span_id) == 8 else b"",
        ))  # fmt: skip
    return records


class _RequestLogExporter(OTLPLogExporter):
    """``OTLPLogExporter`` that sends an ``ExportLogsServiceRequest`` built here.

    The records are built as protobuf (:func:`anomaly_log_records`) so their
    shape — event name, exemplar trace and span id, attribute types — is exactly
    the documented one; the exporter brings the transport (channel, TLS,
    headers, compression, retry, ``RetryInfo``). Its ``_translate_data`` hook
    turns SDK log records into that request; here the request is already made.
    """

    def _translate_data(self, data: Any) -> ExportLogsServiceRequest:
        request: ExportLogsServiceRequest = data
        return request

    def _count_data(self, data: Any) -> int:
        return sum(len(scope.log_records) for resource in data.resource_logs
                   for scope in resource.scope_logs)  # fmt: skip


class OtlpAnomalyExporter:
    """Sends transitions as OTLP log records to an OTLP/gRPC endpoint.

    ``endpoint`` is a URL: ``https://host:port`` is TLS (the system's roots, or
    the CA in ``OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE`` / ``..._CERTIFICATE``, or
    ``credentials``), ``http://host:port`` plaintext unless ``insecure=False``.
    ``headers`` (e.g. ``{"authorization": "Bearer ..."}``) are sent with each
    export; without them the OTel variables ``OTEL_EXPORTER_OTLP_LOGS_HEADERS``
    then ``OTEL_EXPORTER_OTLP_HEADERS`` are read. ``timeout`` (seconds, default
    ``OTEL_EXPORTER_OTLP_[LOGS_]TIMEOUT`` or 10) bounds one :meth:`notify`,
    retries included. :meth:`notify` blocks for that long at most and never raises.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        insecure: bool | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = None,
    ) -> None:
        self._exporter = _RequestLogExporter(
            endpoint=endpoint,
            insecure=insecure,
            credentials=credentials,
            headers=dict(headers) if headers else None,
            timeout=timeout,
        )
        self.sent = 0
        self.failed = 0

    def notify(self, transitions: Sequence[dict[str, Any]]) -> None:
        if not transitions:
            return
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = "segwatch"
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name = "segwatch.detectors"
        try:
            scope_logs.log_records.extend(anomaly_log_records(transitions))
            exported: Any = self._exporter.export(request)  # type: ignore[arg-type]
            # By name: the SDK renamed the enum (LogExportResult, LogRecordExportResult).
            delivered = getattr(exported, "name", None) == "SUCCESS"
        except Exception:  # delivery never raises into the detector run
            _logger.exception("anomaly log records not delivered")
            delivered = False
        if delivered:
            self.sent += len(transitions)
        else:
            self.failed += len(transitions)  # the exporter logged why
            _logger.error("%d anomaly log records not delivered", len(transitions))

    def close(self) -> None:
        self._exporter.shutdown()


def webhook_payload(transition: dict[str, Any]) -> dict[str, Any]:
    """The JSON a webhook receives: Slack's ``text``, then every field of the anomaly
    (``incident_id``, ``incident_summary``, ... included)."""
    verb = "opened" if transition["state"] == "open" else "resolved"
    what = f"incident {transition['incident_id']}" if transition.get("incident_id") else "anomaly"
    text = (
        f"[segwatch] {transition['model_name']} {transition['model_version']}: {what} {verb} "
        f"({transition['detector']}): "
        f"{transition.get('incident_summary') or transition['details']}"
    )
    # Strict JSON: a statistic that does not apply is NaN (e.g. KS for a category): null.
    return {"text": text, "anomaly": json_value(transition)}


class WebhookNotifier:
    """POSTs each incident that opens or resolves as JSON to ``url`` (the transitions
    with ``incident_alert``; a transition without an incident, one recorded before
    incidents were, is posted too), retried, at most ``per_minute`` a minute."""

    def __init__(
        self, url: str, *, per_minute: int = 30, attempts: int = 4, timeout: float = 10.0
    ) -> None:
        self.url = url
        self._per_minute = per_minute
        self._attempts = attempts
        self._timeout = timeout
        self._sent_at: list[float] = []
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def close(self) -> None:
        pass  # one connection per post: nothing held

    def _allowed(self) -> bool:
        now = time.monotonic()
        with self._lock:
            self._sent_at = [t for t in self._sent_at if now - t < 60]
            if len(self._sent_at) >= self._per_minute:
                return False
            self._sent_at.append(now)
            return True

    def notify(self, transitions: Sequence[dict[str, Any]]) -> None:
        for transition in transitions:
            if transition.get("incident_id") and not transition.get("incident_alert"):
                continue  # one post per incident: its opening and its resolution
            if not self._allowed():
                self.dropped += 1
                _logger.warning("webhook rate limit reached: an anomaly was not posted")
                continue
            self._post(json.dumps(webhook_payload(transition), allow_nan=False).encode())

    def _post(self, body: bytes) -> None:
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            request = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout):
                    self.sent += 1
                    return
            except urllib.error.HTTPError as exc:
                retryable = exc.code == 429 or exc.code >= 500
                error: Exception = exc
            except (urllib.error.URLError, OSError) as exc:
                retryable, error = True, exc
            if not retryable or attempt == self._attempts:
                self.failed += 1
                _logger.error("webhook post failed: %s", error)
                return
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 30.0)


def notifiers(config: AlertsConfig) -> list[AnomalyNotifier]:
    """The destinations ``alerts`` configures: the OTLP endpoint, then each webhook."""
    out: list[AnomalyNotifier] = []
    if config.otlp_endpoint:
        out.append(OtlpAnomalyExporter(config.otlp_endpoint))
    out.extend(WebhookNotifier(webhook.url) for webhook in config.webhooks)
    return out
