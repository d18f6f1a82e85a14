"""End to end through the real parts: OTel SDK OTLP/gRPC exporter → collector on a
loopback port → embedded ClickHouse → PSI detector."""

from __future__ import annotations

import datetime as dt
import time

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from waiting import wait_until

from segwatch.clickhouse.detection import run_detectors
from segwatch.clickhouse.queries import AnomalyFilter, list_anomalies
from segwatch.collector.cli.demo import DemoScenario, service_tracer_provider, simulate
from segwatch.collector.service.collector import Collector


def test_drift_in_one_segment_is_found_there_and_nowhere_else(collector: Collector) -> None:
    assert collector.receiver is not None and collector.processor is not None
    provider = service_tracer_provider(collector.receiver.address, "e2e")
    now = int(time.time())
    scenario = DemoScenario(end=now - now % 300, drift_country="MX", seed=11)
    sent = simulate(scenario, provider)
    provider.force_flush()
    provider.shutdown()
    stats = collector.processor.stats
    wait_until(lambda: stats.model_calls >= sent)
    assert stats.model_calls == sent and stats.rejected_spans == 0
    collector.flush()  # acknowledged = spooled; the store has it after the next flush

    client = collector._clients.api  # type: ignore[union-attr]
    # Every call landed in its own minute bucket: per model, 75 one-minute buckets.
    buckets = client.query(
        "SELECT model_name, uniqExact(bucket_start), sum(count) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.country' GROUP BY model_name"
    ).result_rows
    assert buckets == [("fraud", 75, 75 * scenario.fraud_per_minute)]
    calls = client.query("SELECT count(), uniqExact(trace_id) FROM ml_model_calls").result_rows
    assert calls == [(sent, sent)]

    runs = run_detectors(client, dt.datetime.fromtimestamp(scenario.end, dt.timezone.utc))
    run = next(r for r in runs if r.detector == "psi_drift")
    found = {(a["model_name"], a["segment_dim"], a["segment_value"]) for a in run.new_anomalies}
    assert found == {("fraud", "feature.country", "MX")}
    quantities = {a["quantity"] for a in run.new_anomalies}
    assert "feature.amount" in quantities
    # Each anomaly links to a real trace of the drifting segment.
    trace_id = run.new_anomalies[0]["exemplar_trace_ids"][0]
    country = client.query(
        "SELECT strings['feature.country'] FROM ml_model_calls WHERE trace_id = {t:String}",
        parameters={"t": trace_id},
    ).result_rows
    assert country == [("MX",)]
    listed = list_anomalies(client, AnomalyFilter(findings=True))
    drift = [row for row in listed.rows if row[listed.columns.index("detector")] == "psi_drift"]
    assert len(drift) == len(run.new_anomalies)


def test_partial_success_counts_rejected_spans(collector: Collector) -> None:
    assert collector.receiver is not None
    request = trace_service_pb2.ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    good = spans.add(
        name="predict m",
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        start_time_unix_nano=time.time_ns(),
    )
    good.attributes.add(key="ml.model.name").value.string_value = "m"
    good.attributes.add(key="ml.feature.x").value.double_value = 1.0
    bad = spans.add(name="predict ?", trace_id=b"\x03" * 16, span_id=b"\x04" * 8)
    bad.attributes.add(key="ml.feature.x").value.double_value = 2.0
    spans.add(name="GET /", trace_id=b"\x05" * 16, span_id=b"\x06" * 8)  # not a model call
    with grpc.insecure_channel(collector.receiver.address) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        response = stub.Export(request, timeout=30)
    assert response.partial_success.rejected_spans == 1
    assert "ml.model.name" in response.partial_success.error_message
    assert collector.processor is not None and collector.processor.stats.model_calls == 1


def test_bytes_that_are_not_a_trace_request_are_refused_as_invalid(collector: Collector) -> None:
    assert collector.receiver is not None
    with grpc.insecure_channel(collector.receiver.address) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        )  # raw bytes in and out
        try:
            export(b"\x0a\xff\xff", timeout=30)
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "not an OTLP trace request" in (error.details() or "")
        else:
            raise AssertionError("a malformed request was accepted")
    assert collector.processor is not None and collector.processor.stats.model_calls == 0
