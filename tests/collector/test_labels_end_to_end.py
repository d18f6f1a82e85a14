"""Delayed labels: OTel logs SDK → OTLP/gRPC LogsService → ml_labels → joined to predictions."""

from __future__ import annotations

import time

import grpc
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from waiting import wait_until

from segwatch.collector.cli.demo import service_tracer_provider
from segwatch.instrumentation import log_label, monitor

DAY_NS = 86_400 * 10**9


def test_labels_arriving_days_later_join_their_predictions(collector) -> None:
    address = collector.receiver.address
    tracer_provider = service_tracer_provider(address, "shop")
    fraud = monitor("fraud", version="1", tracer_provider=tracer_provider)
    start = (int(time.time()) - 5 * 86400) * 10**9  # the labels, 3-4 days on, are still past
    for i in range(20):
        with fraud.call(start_time=start + i, end_time=start + i + 1) as call:
            call.features(amount=10.0 * i)
            call.outputs(score=i / 20)
            call.prediction_id(f"tx-{i}")
    tracer_provider.shutdown()

    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"http://{address}", insecure=True))
    )
    for i in range(0, 20, 2):  # half the predictions get a label, three days later
        log_label(f"tx-{i}", model="fraud", is_fraud=i % 4 == 0, timestamp=start + 3 * DAY_NS,
                  logger_provider=logger_provider)  # fmt: skip
    # A correction: the latest label of a prediction wins.
    log_label("tx-0", model="fraud", is_fraud=False, timestamp=start + 4 * DAY_NS,
              logger_provider=logger_provider)  # fmt: skip
    logger_provider.shutdown()

    stats = collector.processor.stats
    wait_until(lambda: stats.model_calls >= 20 and stats.labels >= 11)
    collector.flush()
    client = collector._clients.api
    rows = client.query(
        "SELECT prediction_id, numbers['output.score'], label_strings['label.is_fraud'] "
        "FROM ml_labeled_calls ORDER BY toUInt32(substring(prediction_id, 4))"
    ).result_rows
    assert [r[0] for r in rows] == [f"tx-{i}" for i in range(0, 20, 2)]
    assert rows[0] == ("tx-0", 0.0, "false")  # corrected
    assert rows[1] == ("tx-2", 0.1, "false")
    assert rows[2] == ("tx-4", 0.2, "true")


def test_label_records_without_ids_are_rejected_and_other_logs_ignored(collector) -> None:
    request = logs_service_pb2.ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    good = records.add(event_name="ml.label", time_unix_nano=1)
    for key, value in [("ml.model.name", "m"), ("ml.prediction.id", "p1"), ("ml.label.y", "a")]:
        good.attributes.add(key=key).value.string_value = value
    legacy = records.add(time_unix_nano=1)  # event name as an attribute, older SDKs
    for key, value in [("event.name", "ml.label"), ("ml.model.name", "m"),
                       ("ml.prediction.id", "p2"), ("ml.label.y", "b")]:  # fmt: skip
        legacy.attributes.add(key=key).value.string_value = value
    bad = records.add(event_name="ml.label")
    bad.attributes.add(key="ml.label.y").value.string_value = "c"
    records.add(body={"string_value": "an ordinary log line"})
    with grpc.insecure_channel(collector.receiver.address) as channel:
        response = logs_service_pb2_grpc.LogsServiceStub(channel).Export(request, timeout=30)
    assert response.partial_success.rejected_log_records == 1
    assert "ml.prediction.id" in response.partial_success.error_message
    labels = collector._clients.api.query(
        "SELECT prediction_id, strings['label.y'] FROM ml_labels ORDER BY prediction_id"
    ).result_rows
    assert labels == [("p1", "a"), ("p2", "b")]
