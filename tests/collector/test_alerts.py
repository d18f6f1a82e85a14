"""Anomaly delivery: OTLP log records to a real gRPC server, webhooks to a real HTTP server."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import math
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
import trustme
from google.protobuf.any_pb2 import Any as AnyMessage
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from segwatch.clickhouse.queries import add_exemplar_span_ids
from segwatch.collector.config import AlertsConfig, WebhookConfig
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.service.alerts import (
    OtlpAnomalyExporter,
    WebhookNotifier,
    anomaly_log_records,
    notifiers,
)
from segwatch.collector.store.call_rows import call_rows
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import monitor

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


def _transition(state: str = "open", segment: str = "BR") -> dict:
    return {
        "exemplar_span_id": SPAN,
        "state": state, "detector": "psi_drift", "model_name": "fraud", "model_version": "2",
        "model_stage": "serving", "segment_dim": "feature.country", "segment_value": segment,
        "quantity": "feature.amount",
        "window_start": dt.datetime(2026, 11, 26, 10, 0),
        "window_end": dt.datetime(2026, 11, 26, 10, 15),
        "score": 0.41, "threshold": 0.2, "p_value": 1e-9, "support": 3100,
        "exemplar_trace_ids": [TRACE], "statistics": {"psi": 0.41, "ks": math.nan},
        "details": f"feature.amount drifted for feature.country={segment}: PSI 0.41 > 0.2",
    }  # fmt: skip


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    """Refuses the first export with UNAVAILABLE and a RetryInfo delay, then records.

    The delay goes where the Go and Java exporters read it (a ``Status`` detail in
    ``grpc-status-details-bin``) and where the Python SDK's reads it
    (``google.rpc.retryinfo-bin``), as the collector's own receiver sends it.
    """

    def __init__(self) -> None:
        self.requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.refused = 0

    def Export(self, request, context):  # type: ignore[no-untyped-def]
        if not self.refused:
            self.refused += 1
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromMilliseconds(1500)  # longer than the SDK's first backoff (1 s)
            detail = AnyMessage()
            detail.Pack(info)
            status = status_pb2.Status(code=14, message="busy", details=[detail])
            context.set_trailing_metadata([
                ("grpc-status-details-bin", status.SerializeToString()),
                ("google.rpc.retryinfo-bin", info.SerializeToString()),
            ])  # fmt: skip
            context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def logs_server() -> Iterator[tuple[_Logs, str]]:
    servicer = _Logs()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_anomalies_go_out_as_otlp_log_records(logs_server) -> None:  # type: ignore[no-untyped-def]
    servicer, endpoint = logs_server
    exporter = OtlpAnomalyExporter(f"http://{endpoint}")
    started = time.monotonic()
    exporter.notify([_transition("open"), _transition("resolved", "US")])
    exporter.close()
    assert servicer.refused == 1 and exporter.sent == 2  # retried after the RetryInfo delay
    # It waited as told (a lower bound: no timing assumption about a busy machine).
    assert time.monotonic() - started >= 1.5
    (request,) = servicer.requests
    records = request.resource_logs[0].scope_logs[0].log_records
    opened, resolved = records
    assert opened.event_name == "ml.anomaly" and opened.severity_text == "WARN"
    assert resolved.severity_text == "INFO"
    assert opened.trace_id.hex() == TRACE and opened.span_id.hex() == SPAN
    assert opened.body.string_value.startswith("feature.amount drifted for feature.country=BR")
    attributes = {a.key: a.value for a in opened.attributes}
    assert attributes["ml.anomaly.detector"].string_value == "psi_drift"
    assert attributes["ml.anomaly.segment.value"].string_value == "BR"
    assert attributes["ml.anomaly.score"].double_value == 0.41
    assert attributes["ml.model.name"].string_value == "fraud"
    assert opened.time_unix_nano == int(dt.datetime(2026, 11, 26, 10, 15, tzinfo=dt.timezone.utc)
                                        .timestamp()) * 10**9  # fmt: skip


@pytest.fixture
def tls_logs_server(tmp_path: Path) -> Iterator[tuple[_Logs, str, Path]]:
    """A LogsService behind TLS with a certificate from a fresh CA (``trustme``)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    credentials = grpc.ssl_server_credentials(
        [(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes())]
    )
    servicer = _Logs()
    servicer.refused = 1  # no UNAVAILABLE here
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield servicer, f"127.0.0.1:{port}", ca_file
    server.stop(None)


@pytest.mark.parametrize("headers_from", ["config", "environment"])
def test_anomalies_go_over_tls_with_headers(
    tls_logs_server: tuple[_Logs, str, Path], monkeypatch: pytest.MonkeyPatch, headers_from: str
) -> None:
    """``https://`` is TLS, checked against the CA the OTel variable names; headers are sent."""
    servicer, endpoint, ca_file = tls_logs_server
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", str(ca_file))
    options: dict[str, Any] = {}
    if headers_from == "config":
        options["headers"] = {"authorization": "Bearer s3cret"}
    else:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "authorization=Bearer%20s3cret")
    exporter = OtlpAnomalyExporter(f"https://{endpoint}", **options)
    try:
        exporter.notify([_transition("open")])
    finally:
        exporter.close()
    assert (exporter.sent, exporter.failed) == (1, 0)
    (metadata,) = servicer.metadata
    assert metadata["authorization"] == "Bearer s3cret"
    (request,) = servicer.requests
    (record,) = request.resource_logs[0].scope_logs[0].log_records
    assert record.event_name == "ml.anomaly" and record.trace_id.hex() == TRACE


def test_a_server_certificate_from_an_unknown_ca_is_refused(
    tls_logs_server: tuple[_Logs, str, Path],
) -> None:
    """Without the test CA the system roots are used, and they do not sign the server."""
    servicer, endpoint, _ = tls_logs_server
    exporter = OtlpAnomalyExporter(f"https://{endpoint}", timeout=2)
    try:
        exporter.notify([_transition("open")])  # logs the failure, does not raise
    finally:
        exporter.close()
    assert (exporter.sent, exporter.failed) == (0, 1) and not servicer.requests


def _strict(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")  # Python's json reads NaN; receivers do not


class _Hook(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first ``failures_left`` posts, then records them."""

    bodies: ClassVar[list[dict]] = []
    failures_left: ClassVar[int] = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])),
                          parse_constant=_strict)  # fmt: skip
        if _Hook.failures_left:
            _Hook.failures_left -= 1
            self.send_response(503)
        else:
            _Hook.bodies.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.bodies, _Hook.failures_left = [], 1
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_webhooks_are_retried_and_rate_limited(webhook: str) -> None:
    notifier = WebhookNotifier(webhook, per_minute=2)
    notifier.notify([_transition("open", country) for country in ("BR", "MX", "DE")])
    assert (notifier.sent, notifier.failed, notifier.dropped) == (2, 0, 1)
    first = _Hook.bodies[0]  # posted on the second try: the first got a 503
    assert first["text"].startswith(
        "[segwatch] fraud 2: anomaly opened (psi_drift): feature.amount"
    )
    assert first["anomaly"]["segment_value"] == "BR" and first["anomaly"]["score"] == 0.41
    assert first["anomaly"]["statistics"] == {"psi": 0.41, "ks": None}  # NaN: null


def _of_incident(transition: dict, role: str, alert: bool) -> dict:
    return {**transition, "incident_id": "9f2c01d2a7b3e4f5", "incident_role": role,
            "incident_alert": alert,
            "incident_summary": "feature.amount moved for feature.country=BR. As a consequence: "
                                "output.score there (metric_shift)"}  # fmt: skip


def test_one_webhook_post_and_one_warning_per_incident(webhook: str) -> None:
    """The root opens the incident: posted, WARN. A consequence joining, or a member
    resolving while others stay open: not posted, INFO. The last member resolving
    resolves the incident: posted."""
    root = _of_incident(_transition("open"), "root", True)
    echo = {**_of_incident(_transition("open"), "consequence", False), "quantity": "output.score"}
    partly = _of_incident(_transition("resolved"), "consequence", False)
    closed = _of_incident(_transition("resolved"), "root", True)
    notifier = WebhookNotifier(webhook)
    notifier.notify([root, echo, partly, closed])
    assert notifier.sent == 2
    opened, resolved = _Hook.bodies
    assert opened["text"] == (
        "[segwatch] fraud 2: incident 9f2c01d2a7b3e4f5 opened (psi_drift): feature.amount moved "
        "for feature.country=BR. As a consequence: output.score there (metric_shift)"
    )
    assert opened["anomaly"]["incident_role"] == "root"
    assert resolved["text"].startswith("[segwatch] fraud 2: incident 9f2c01d2a7b3e4f5 resolved")
    records = anomaly_log_records([root, echo, partly, closed])
    assert [r.severity_text for r in records] == ["WARN", "INFO", "INFO", "INFO"]
    attributes = {kv.key: kv.value.string_value for kv in records[1].attributes}
    assert attributes["ml.incident.id"] == "9f2c01d2a7b3e4f5"
    assert attributes["ml.incident.role"] == "consequence"


def test_the_config_names_the_destinations() -> None:
    built = notifiers(AlertsConfig(webhooks=(WebhookConfig("http://127.0.0.1:9/a"),),
                                   otlp_endpoint="http://127.0.0.1:4317"))  # fmt: skip
    assert [type(n).__name__ for n in built] == ["OtlpAnomalyExporter", "WebhookNotifier"]


def test_the_exemplar_span_id_is_read_from_the_raw_calls(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """Aggregates keep trace ids only; the span of the call is found in ml_model_calls."""
    model = monitor(model="fraud", version="2", tracer_provider=recorder.provider)
    start = int(dt.datetime(2026, 11, 26, 10, 5, tzinfo=dt.timezone.utc).timestamp()) * 10**9
    with model.call(start_time=start, end_time=start + 1) as call:
        call.features(country="BR")
    (span,) = recorder.spans()
    trace, span_id = f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"
    exporter = ClickHouseExporter(client)
    exporter.start()
    try:
        exporter.submit(call_rows(decode_request(recorder.request()))).result(timeout=30)
    finally:
        exporter.shutdown()
    found, other_model, unknown = _transition(), _transition(), _transition()
    for t in (found, other_model, unknown):
        del t["exemplar_span_id"]
    found["exemplar_trace_ids"] = other_model["exemplar_trace_ids"] = [trace]
    other_model["model_name"] = "eta"  # the same trace, not a call of this model
    add_exemplar_span_ids(client, [found, other_model, unknown])
    assert found["exemplar_span_id"] == span_id
    assert "exemplar_span_id" not in other_model and "exemplar_span_id" not in unknown
    (record,) = anomaly_log_records([found])
    assert (record.trace_id.hex(), record.span_id.hex()) == (trace, span_id)
