"""storage.traces: model-call spans in ``otel_traces``, the OpenTelemetry Collector
contrib clickhouseexporter's table, written as that exporter writes them."""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from waiting import wait_until

from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config import (
    ApiConfig,
    CollectorConfig,
    ReceiverConfig,
    SchedulerConfig,
    StorageConfig,
)
from segwatch.collector.config.storage import SpoolConfig, TracesConfig
from segwatch.collector.decode.fast_reader import scan_request
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.model_calls import ModelCallBatch
from segwatch.collector.service.collector import Collector
from segwatch.collector.store.rows import insert_blocks
from segwatch.collector.store.trace_rows import TRACE_SCHEMA, trace_rows, traced_rows
from segwatch.instrumentation import monitor


def _collector(tmp_path: Path, traces: TracesConfig, spool: SpoolConfig | None = None) -> Collector:
    config = CollectorConfig(
        storage=StorageConfig(
            dsn=f"chdb://{tmp_path / 'store'}", traces=traces, spool=spool or SpoolConfig()
        ),
        receiver=ReceiverConfig(endpoint="127.0.0.1:0"),
        api=ApiConfig(endpoint="127.0.0.1:0"),
        scheduler=SchedulerConfig(enabled=False),
    )
    return Collector(config)


@pytest.fixture
def every_trace(tmp_path: Path) -> Iterator[Collector]:
    running = _collector(tmp_path, TracesConfig(sample=1.0))
    running.start()
    yield running
    running.shutdown()


def _provider(endpoint: str, kept: InMemorySpanExporter) -> TracerProvider:
    resource = Resource.create({"service.name": "checkout", "deployment.environment": "test"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint, insecure=True)))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    return provider


def test_spans_are_written_as_the_exporter_writes_them(every_trace: Collector) -> None:
    """Parent, kind, status, events, links, resource, scope and every attribute, from the
    real SDK through real gRPC: what a trace view needs, not the model-call columns."""
    assert every_trace.receiver is not None and every_trace.processor is not None
    kept = InMemorySpanExporter()
    provider = _provider(every_trace.receiver.address, kept)
    tracer = provider.get_tracer("shop.scoring", "2.1.0")
    with tracer.start_as_current_span("POST /score", kind=SpanKind.SERVER) as parent:
        link = Link(parent.get_span_context(), {"why": "retry"})
        with tracer.start_as_current_span("predict fraud", kind=SpanKind.INTERNAL,
                                          links=[link]) as span:  # fmt: skip
            span.set_attributes({
                "ml.model.name": "fraud", "ml.model.version": "v2", "ml.feature.amount": 12.5,
                "ml.feature.country": "BR", "ml.feature.items": 3, "ml.feature.new": True,
                "ml.output.score": 0.25, "http.route": "/score",
            })  # fmt: skip
            span.add_event("scored", {"threshold": 0.5, "tags": ["a", "b"]})
            span.set_status(Status(StatusCode.ERROR, "score out of range"))
    provider.shutdown()
    wait_until(lambda: every_trace.processor is not None
               and every_trace.processor.stats.model_calls >= 1)  # fmt: skip
    every_trace.flush()

    client = every_trace._clients.api  # type: ignore[union-attr]
    rows = client.query("SELECT * FROM otel_traces").named_results()
    (row,) = list(rows)  # the model-call span only: the parent is not a model call
    (sent,) = [s for s in kept.get_finished_spans() if s.name == "predict fraud"]
    assert row["TraceId"] == f"{sent.context.trace_id:032x}"
    assert row["SpanId"] == f"{sent.context.span_id:016x}"
    assert row["ParentSpanId"] == f"{sent.parent.span_id:016x}"
    assert (row["SpanName"], row["SpanKind"], row["ServiceName"]) == (
        "predict fraud", "Internal", "checkout")  # fmt: skip
    assert (row["ScopeName"], row["ScopeVersion"]) == ("shop.scoring", "2.1.0")
    assert row["ResourceAttributes"]["deployment.environment"] == "test"
    assert row["SpanAttributes"] == {
        "ml.model.name": "fraud", "ml.model.version": "v2", "ml.feature.amount": "12.5",
        "ml.feature.country": "BR", "ml.feature.items": "3", "ml.feature.new": "true",
        "ml.output.score": "0.25", "http.route": "/score",
    }  # fmt: skip
    assert row["Duration"] == sent.end_time - sent.start_time
    assert (row["StatusCode"], row["StatusMessage"]) == ("Error", "score out of range")
    assert row["Events.Name"] == ["scored"]
    assert row["Events.Attributes"] == [{"threshold": "0.5", "tags": '["a","b"]'}]
    assert row["Links.SpanId"] == [f"{sent.parent.span_id:016x}"]
    assert row["Links.Attributes"] == [{"why": "retry"}]
    # The lookup table the exporter keeps beside it, filled by its materialized view.
    lookup = client.query(
        "SELECT count() FROM otel_traces_trace_id_ts WHERE TraceId = {t:String}",
        parameters={"t": row["TraceId"]},
    ).result_rows
    assert lookup == [(1,)]


def test_the_table_has_the_exporters_schema(tmp_path: Path) -> None:
    client = open_client(parse_dsn(f"chdb://{tmp_path / 'store'}"))
    try:
        apply_migrations(client)
        columns = client.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
            "AND table = 'otel_traces' AND default_kind != 'ALIAS' ORDER BY position"
        ).result_rows
        keys = client.query(
            "SELECT sorting_key, primary_key, partition_key FROM system.tables "
            "WHERE database = currentDatabase() AND name = 'otel_traces'"
        ).result_rows
        lookup = client.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
            "AND table = 'otel_traces_trace_id_ts' ORDER BY position"
        ).result_rows
    finally:
        client.close()
    assert columns == list(TRACE_SCHEMA.items())
    sorting, partition = "ServiceName, SpanName, toDateTime(Timestamp)", "toDate(Timestamp)"
    assert keys == [(f"{sorting}, Timestamp", sorting, partition)]
    assert lookup == [("TraceId", "String"), ("Start", "SimpleAggregateFunction(min, DateTime)"),
                      ("End", "SimpleAggregateFunction(max, DateTime)")]  # fmt: skip


class _SeededIds(IdGenerator):
    """The SDK's random ids, from a seeded generator: the traces a sample keeps (by trace
    id) are the same on every run, so what a test counts of them cannot vary by chance."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


def _model_calls(n: int, seed: int) -> ExportTraceServiceRequest:
    """``n`` model calls, each its own trace, encoded as the SDK's OTLP exporter would (the
    ids seeded too)."""
    kept = InMemorySpanExporter()
    provider = TracerProvider(id_generator=_SeededIds(seed))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    fraud = monitor("fraud", tracer_provider=provider)
    rng = random.Random(seed)
    for _ in range(n):
        with fraud.call() as call:
            call.features(amount=rng.lognormvariate(3, 1), country=rng.choice("ABCDEFGHIJ"))
            call.outputs(score=rng.random())
    request = encode_spans(kept.get_finished_spans())
    provider.shutdown()
    return request


def test_the_sample_is_the_sdks_trace_id_ratio_sampler() -> None:
    """The rows chosen by the sample are those OTel's TraceIdRatioBased keeps at the same
    rate: a service that samples at that rate keeps every trace written here."""
    batch = scan_request(_model_calls(3000, seed=1).SerializeToString())
    assert batch is not None and len(batch) == 3000
    for rate in (0.01, 0.1, 0.5):
        chosen = set(traced_rows(batch, rate, set()).tolist())
        sampler = TraceIdRatioBased(rate)
        kept = {
            i for i, t in enumerate(batch.trace_ids)
            if sampler.should_sample(None, int.from_bytes(t, "big"), "x").decision.is_sampled()
        }  # fmt: skip
        assert chosen == kept
        assert abs(len(chosen) / 3000 - rate) < 4 * (rate * (1 - rate) / 3000) ** 0.5 + 0.002
    assert len(traced_rows(batch, 0.0, set())) == 0
    assert len(traced_rows(batch, 1.0, set())) == 3000


def test_both_readers_give_the_same_rows() -> None:
    request = _model_calls(50, seed=2)
    fast = scan_request(request.SerializeToString())
    reference = decode_request(request)
    assert fast is not None
    rows = traced_rows(fast, 1.0, set())
    assert trace_rows(fast, rows).columns == trace_rows(reference, rows).columns
    assert len(trace_rows(fast, rows)) == 50


def test_a_batch_spans_calls_are_one_span() -> None:
    kept = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    with monitor("fraud", tracer_provider=provider).call() as call:
        call.batch(4, {"amount": [1.0, 2.0, 3.0, 4.0]}, {"score": [0.1, 0.2, 0.3, 0.4]})
    batch = decode_request(encode_spans(kept.get_finished_spans()))
    provider.shutdown()
    assert len(batch) == 4
    rows = trace_rows(batch, traced_rows(batch, 1.0, set()))
    assert len(rows) == 1 and rows.columns["SpanAttributes"][0]["ml.batch.size"] == "4"


def _after_calls(
    tmp_path: Path, traces: TracesConfig, calls: int, seed: int, *queries: str
) -> list[list[tuple[object, ...]]]:
    """The rows of ``queries`` once a collector with ``traces`` stored ``calls`` calls."""
    running = _collector(tmp_path, traces)
    running.start()
    try:
        assert running.processor is not None
        running.processor.consume(_model_calls(calls, seed=seed).SerializeToString())
        running.flush()
        client = running._clients.api  # type: ignore[union-attr]
        return [[tuple(row) for row in client.query(q).result_rows] for q in queries]
    finally:
        running.shutdown()


def test_exemplars_are_written_without_a_sample(tmp_path: Path) -> None:
    """sample: 0 keeps only the exemplars: every trace id an aggregate names is there."""
    named, written = _after_calls(
        tmp_path, TracesConfig(sample=0.0), 400, 3,
        "SELECT DISTINCT arrayJoin(exemplar_trace_ids) FROM ml_segment_aggregates",
        "SELECT TraceId FROM otel_traces",
    )  # fmt: skip
    assert named and set(named) <= set(written)
    assert len(written) < 100  # the exemplars, not all 400 calls


def test_write_false_leaves_the_table_to_its_exporter(tmp_path: Path) -> None:
    calls, traces = _after_calls(
        tmp_path, TracesConfig(write=False, sample=1.0), 20, 4,
        "SELECT count() FROM ml_model_calls", "SELECT count() FROM otel_traces",
    )  # fmt: skip
    assert (calls, traces) == ([(20,)], [(0,)])


def test_an_anomalys_exemplar_traces_are_in_otel_traces(demo_store: Path) -> None:
    """The demo (real SDK, gRPC, collector, detectors, default storage.traces): every
    trace id an anomaly names opens in otel_traces, with its span's attributes."""
    client = open_client(parse_dsn(f"chdb://{demo_store}"))
    try:
        named = client.query(
            "SELECT model_name, segment_dim, segment_value, arrayJoin(exemplar_trace_ids) "
            "FROM ml_anomalies"
        ).result_rows
        spans = {
            r[0]: r[1] for r in client.query(
                "SELECT TraceId, SpanAttributes FROM otel_traces WHERE TraceId IN "
                "(SELECT arrayJoin(exemplar_trace_ids) FROM ml_anomalies)"
            ).result_rows
        }  # fmt: skip
        total = client.query("SELECT count() FROM otel_traces").result_rows[0][0]
        calls = client.query("SELECT count() FROM ml_model_calls").result_rows[0][0]
    finally:
        client.close()
    assert named, "the demo's detectors found nothing to check"
    for model, dimension, segment, trace_id in named:
        attributes = spans[trace_id]
        assert attributes["ml.model.name"] == model
        if dimension.startswith("feature.") and dimension != "feature.amount":
            assert attributes[f"ml.{dimension}"] == segment
    assert total < calls * 0.2  # a sample and the exemplars, not every call


def test_a_replayed_flush_adds_no_spans(tmp_path: Path) -> None:
    """The rows go in under the flush's deduplication token, like the aggregates."""
    client = open_client(parse_dsn(f"chdb://{tmp_path / 'store'}"))
    try:
        apply_migrations(client)
        batch = scan_request(_model_calls(30, seed=5).SerializeToString())
        assert batch is not None
        rows = trace_rows(batch, traced_rows(batch, 1.0, set()))
        settings = {"insert_deduplication_token": "flush-1-otel_traces"}
        for _ in range(2):
            insert_blocks(client, rows.table, rows.column_names, [rows.native()], settings)
        count = client.query("SELECT count() FROM otel_traces").result_rows
    finally:
        client.close()
    assert count == [(30,)]


_UNTIMED = SpoolConfig(flush_interval=3600.0)
"""A spool whose flushes are the test's own (``Collector.flush``): calls wait until then."""


def _held_for_one_more_request(tmp_path: Path, traces: TracesConfig, payload: bytes) -> int:
    """The bytes a collector holds in memory for a request that waits for its flush."""
    running = _collector(tmp_path, traces, _UNTIMED)
    running.start()
    try:
        assert running.processor is not None
        running.processor.consume(payload)  # first uses (caches, the spool's file) are not it
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            running.processor.consume(payload)
            gc.collect()
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    finally:
        running.shutdown()


def test_a_waiting_request_keeps_its_spans_in_the_spool_not_in_memory(tmp_path: Path) -> None:
    """A request's bytes are in the spool until its flush ends, so its calls wait for the
    flush without them: what storage.traces adds to a waiting request is where its spans
    are (a few arrays), not the request again. Measured against traces off, in the same
    test (kept in memory, the spans added the whole request: 0.82 of 1.45 MiB for
    bench/ingest.py's requests)."""
    payload = _model_calls(1000, seed=9).SerializeToString()
    without = _held_for_one_more_request(tmp_path / "off", TracesConfig(write=False), payload)
    with_spans = _held_for_one_more_request(tmp_path / "on", TracesConfig(sample=1.0), payload)
    assert with_spans - without < len(payload) / 4, (with_spans, without, len(payload))


def test_spans_read_back_from_the_spool_are_the_spans_sent(tmp_path: Path) -> None:
    """Every span of a request that waited for its flush, written from the spool's copy:
    the same rows as from the request's bytes in memory."""
    payload = _model_calls(300, seed=10).SerializeToString()
    batch = scan_request(payload)
    assert batch is not None
    expected = trace_rows(batch, traced_rows(batch, 1.0, set())).columns
    names = ("SpanId", "SpanName", "SpanAttributes", "ResourceAttributes", "Duration")
    running = _collector(tmp_path, TracesConfig(sample=1.0), _UNTIMED)
    running.start()
    try:
        assert running.processor is not None
        running.processor.consume(payload)
        (pending,) = running.processor.buffer._pending
        assert all(o.source.data == b"" for o in pending.batch.span_origins)  # type: ignore[attr-defined]
        running.flush()
        client = running._clients.api  # type: ignore[union-attr]
        stored = client.query(
            f"SELECT {', '.join(names)} FROM otel_traces ORDER BY SpanId"
        ).result_rows
    finally:
        running.shutdown()
    sent = sorted(zip(*(expected[name] for name in names), strict=True))
    assert [tuple(row) for row in stored] == sent and len(sent) == 300


def test_a_spool_that_lost_a_waiting_request_costs_its_spans_not_its_calls(
    tmp_path: Path,
) -> None:
    """The spool segment cut short under the second of two waiting requests (a disk that
    lost it): that request's spans cannot be read back, so the flush goes on without
    them, counted as lost; the first request's spans, and both requests' calls and
    aggregates, are stored and the flush completes."""
    running = _collector(tmp_path, TracesConfig(sample=1.0), _UNTIMED)
    running.start()
    try:
        assert running.processor is not None
        running.processor.consume(_model_calls(50, seed=11).SerializeToString())
        (segment,) = (tmp_path / "store" / "segwatch-spool").glob("*.wal")
        first_end = segment.stat().st_size
        running.processor.consume(_model_calls(30, seed=12).SerializeToString())
        with open(segment, "r+b") as handle:
            handle.truncate(first_end)
        running.flush()  # raises if the flush did not complete
        client = running._clients.api  # type: ignore[union-attr]
        calls = client.query("SELECT count() FROM ml_model_calls").result_rows
        aggregates = client.query(
            "SELECT sum(sampled) FROM ml_segment_aggregates "
            "WHERE segment_dim = '__all__' AND quantity = 'output.score'"
        ).result_rows
        spans = client.query("SELECT count() FROM otel_traces").result_rows
        metrics = running.metrics.exposition().decode()
    finally:
        running.shutdown()
    assert (calls, aggregates, spans) == ([(80,)], [(80,)], [(50,)])
    assert "segwatch_otel_traces_spans_lost_total 30.0" in metrics


def test_trace_ids_that_are_not_16_bytes_are_never_sampled() -> None:
    batch = ModelCallBatch(trace_ids=[b"", bytes(16), b"\x01" * 8, bytes(15) + b"\x01"])
    assert traced_rows(batch, 0.5, set()).tolist() == [1, 3]
    assert traced_rows(batch, 0.0, {bytes(16)}).tolist() == [1]
    assert traced_rows(batch, 1.0, set()).tolist() == [0, 1, 2, 3]


def test_the_config_refuses_a_ttl_for_a_table_segwatch_does_not_write() -> None:
    from segwatch.collector.config import ConfigError, parse_config

    text = (
        "storage:\n  traces:\n    write: false\n    exemplars: often\n"
        "  retention:\n    traces: 7d\n"
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text, source="segwatch.yaml")
    problems = "\n".join(refused.value.problems)
    assert "storage.traces.exemplars (line 4): must be one of always, never" in problems
    assert "storage.retention.traces (line 6)" in problems and "exporter" in problems
    assert parse_config("storage:\n  traces:\n    sample: 0.1\n").storage.traces.sample == 0.1


def test_a_span_insert_that_fails_costs_the_spans_not_the_flush(every_trace: Collector) -> None:
    """The store refuses the spans (a column gone): the aggregates and calls are stored,
    the flush completes (the spool lets go of it), and the failure is counted."""
    assert every_trace.processor is not None
    client = every_trace._clients.api  # type: ignore[union-attr]
    client.command("ALTER TABLE otel_traces DROP COLUMN StatusMessage")
    every_trace.processor.consume(_model_calls(40, seed=6).SerializeToString())
    every_trace.flush()  # raises if the flush did not complete
    calls = client.query("SELECT count() FROM ml_model_calls").result_rows
    spans = client.query("SELECT count() FROM otel_traces").result_rows
    assert (calls, spans) == ([(40,)], [(0,)])
    assert "segwatch_otel_traces_spans_lost_total 40.0" in every_trace.metrics.exposition().decode()


def test_a_collector_refuses_an_otel_traces_it_cannot_write(tmp_path: Path) -> None:
    """A table an exporter made first, otherwise (the migration leaves it): refused at
    start in one sentence, unless the config leaves the table to that writer."""
    client = open_client(parse_dsn(f"chdb://{tmp_path / 'store'}"))
    try:
        client.command("CREATE TABLE otel_traces (Timestamp DateTime64(9), TraceId String) "
                       "ENGINE = MergeTree ORDER BY Timestamp")  # fmt: skip
    finally:
        client.close()
    refused = _collector(tmp_path, TracesConfig())
    with pytest.raises(Exception, match=r"otel_traces in this store lacks the columns .*SpanId"):
        refused.start()
    refused.shutdown()
    left_alone = _collector(tmp_path, TracesConfig(write=False))
    left_alone.start()
    left_alone.shutdown()


def test_a_segments_exemplar_is_a_sampled_call_when_it_has_one() -> None:
    """So most exemplars are spans written anyway: the exemplars add few spans of their own."""
    import numpy as np

    from segwatch.collector.aggregate.aggregator import SegmentAggregator
    from segwatch.collector.store.trace_rows import exemplar_trace_ids, sampled_rows

    batch = scan_request(_model_calls(2000, seed=7).SerializeToString())
    assert batch is not None
    sampled = sampled_rows(batch, 0.05)
    preferred = {batch.trace_ids[i] for i in np.flatnonzero(sampled).tolist()}
    assert 40 < len(preferred) < 180
    chosen = exemplar_trace_ids(SegmentAggregator().aggregate(batch, prefer=sampled))
    plain = exemplar_trace_ids(SegmentAggregator().aggregate(batch))
    # A segment of ~200 calls (a country, an amount decade) has a sampled call: only the
    # few small ones (the top amount decade, a rare cross) lack one. Without the
    # preference, each segment's first call is its exemplar.
    assert len(chosen - preferred) <= 5 < 10 <= len(plain - preferred)
    written = traced_rows(batch, 0.05, chosen, sampled)
    assert len(written) == int(sampled.sum()) + len(chosen - preferred)


def test_spans_wait_for_enough_of_them_or_the_time_then_go_in_one_insert(
    tmp_path: Path,
) -> None:
    """One insert per few thousand spans, not per flush (an insert costs about the same for
    300 spans as for 3,000); a reader's flush and the timer send what waits."""
    from segwatch.collector.store.exporter import ClickHouseExporter
    from segwatch.collector.store.span_writer import SpanWriter

    client = open_client(parse_dsn(f"chdb://{tmp_path / 'store'}"))
    exporter = ClickHouseExporter(client)
    exporter.start()
    batch = scan_request(_model_calls(100, seed=8).SerializeToString())
    assert batch is not None
    rows = traced_rows(batch, 1.0, set())
    parts = [trace_rows(batch, rows[i : i + 30]) for i in (0, 30, 60)]

    def stored() -> int:
        return int(client.query("SELECT count() FROM otel_traces").result_rows[0][0])

    try:
        apply_migrations(client)
        writer = SpanWriter(exporter, max_spans=80, max_wait=3600)
        writer.start()
        writer.add(parts[0])
        writer.add(parts[1])
        assert stored() == 0 and exporter.stats.flushes == 0  # 60 spans wait
        writer.add(parts[2])  # 90 ≥ 80: one insert
        # Both: the rows are visible before the exporter counts its flush.
        wait_until(lambda: stored() == 90 and exporter.stats.flushes == 1)
        active = client.query(
            "SELECT count() FROM system.parts WHERE database = currentDatabase() "
            "AND table = 'otel_traces' AND active"
        ).result_rows
        assert active == [(1,)]  # the three flushes' spans in one part
        writer.add(trace_rows(batch, rows[90:95]))
        writer.flush()  # a reader's flush sends what waits
        assert stored() == 95
        writer.shutdown()
        timed = SpanWriter(exporter, max_spans=10_000, max_wait=0.2)
        timed.start()
        timed.add(trace_rows(batch, rows[95:]))
        wait_until(lambda: stored() == 100, timeout=30)
        timed.shutdown()
    finally:
        exporter.shutdown()
        client.close()


def _calls_in_one_minute(n: int, seed: int) -> ModelCallBatch:
    """``n`` calls of one model in the same minute (each its own trace, ids seeded), decoded."""
    kept = InMemorySpanExporter()
    provider = TracerProvider(id_generator=_SeededIds(seed))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    fraud = monitor("fraud", tracer_provider=provider)
    rng = random.Random(seed)
    minute = 1_800_000_000 // 60 * 60
    for i in range(n):
        at = (minute + i * 50 // n) * 1_000_000_000
        with fraud.call(start_time=at, end_time=at + 1000) as call:
            call.features(amount=rng.lognormvariate(3, 1), country=rng.choice("ABCDEFGHIJ"))
            call.outputs(score=rng.random())
    batch = scan_request(encode_spans(kept.get_finished_spans()).SerializeToString())
    provider.shutdown()
    assert batch is not None
    return batch


def test_a_small_segment_costs_one_exemplar_span_a_minute_not_one_a_flush() -> None:
    """A group with no sampled call names the exemplar a stored flush of its minute wrote:
    every trace id a row names is still a span written, and later flushes add few."""
    from segwatch.collector.aggregate.aggregator import SegmentAggregator
    from segwatch.collector.aggregate.exemplars import ExemplarMemory
    from segwatch.collector.store.trace_rows import exemplar_trace_ids, sampled_rows

    aggregator, memory = SegmentAggregator(), ExemplarMemory()
    written: set[bytes] = set()  # trace ids whose spans the flushes wrote
    extra = []  # spans each flush wrote for its exemplars alone
    for seed in (1, 2, 3):
        batch = _calls_in_one_minute(600, seed)
        sampled = sampled_rows(batch, 0.002)
        named = exemplar_trace_ids(aggregator.aggregate(batch, prefer=sampled, exemplars=memory))
        rows = traced_rows(batch, 0.002, named, sampled)
        memory.commit()  # as the flush writer does once the insert succeeded
        written |= {batch.trace_ids[i] for i in rows.tolist()}
        assert named <= written  # every exemplar opens in otel_traces
        extra.append(len(rows) - int(sampled.sum()))
    assert extra[0] >= 10 and extra[1] + extra[2] <= extra[0] // 2, extra
    # A flush that was not stored leaves nothing behind: the next names its own calls.
    fresh = ExemplarMemory()
    batch = _calls_in_one_minute(600, 4)
    aggregator.aggregate(batch, prefer=sampled_rows(batch, 0.002), exemplars=fresh)
    fresh.discard()
    assert len(fresh) == 0
    again = _calls_in_one_minute(600, 5)
    named = exemplar_trace_ids(aggregator.aggregate(again, exemplars=fresh))
    assert named <= set(again.trace_ids)
