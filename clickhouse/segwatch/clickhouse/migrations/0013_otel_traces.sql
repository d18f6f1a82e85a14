-- Raw spans for trace views: the OpenTelemetry Collector contrib clickhouseexporter's
-- otel_traces table (same columns, types, codecs, partitioning, sorting key and
-- skipping indexes), with its trace-id lookup table and materialized view, so the
-- trace views built on that schema (Grafana's ClickHouse data source among them) open
-- the traces an anomaly names. The collector writes the model-call spans of a sampled
-- share of traces and every span an aggregate keeps as an exemplar (storage.traces);
-- where an OpenTelemetry Collector's exporter already made these tables, IF NOT EXISTS
-- leaves them as they are, and storage.traces.write: false leaves them to it.
-- Kept 30 days like the raw calls (storage.retention.traces changes it); the
-- deduplication window makes a replayed flush add nothing, as for the other tables.
CREATE TABLE IF NOT EXISTS otel_traces
(
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)) COMMENT 'Span start time',
    TraceId String CODEC(ZSTD(1)) COMMENT 'Trace id (hex), as in ml_model_calls.trace_id and the anomalies'' exemplar_trace_ids',
    SpanId String CODEC(ZSTD(1)) COMMENT 'Span id (hex)',
    ParentSpanId String CODEC(ZSTD(1)) COMMENT 'Parent span id (hex); empty for a root span',
    TraceState String CODEC(ZSTD(1)) COMMENT 'W3C trace state',
    SpanName LowCardinality(String) CODEC(ZSTD(1)) COMMENT 'Span name, e.g. predict fraud',
    SpanKind LowCardinality(String) CODEC(ZSTD(1)) COMMENT 'Unspecified, Internal, Server, Client, Producer or Consumer',
    ServiceName LowCardinality(String) CODEC(ZSTD(1)) COMMENT 'service.name of the span''s resource',
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)) COMMENT 'The resource''s attributes, values as strings',
    ScopeName String CODEC(ZSTD(1)) COMMENT 'Instrumentation scope name (the tracer''s)',
    ScopeVersion String CODEC(ZSTD(1)) COMMENT 'Instrumentation scope version',
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)) COMMENT 'The span''s attributes (ml.feature.*, ml.output.*, ...), values as strings: numbers as JavaScript prints them, arrays and maps as JSON',
    Duration UInt64 CODEC(T64, ZSTD(1)) COMMENT 'Span duration in nanoseconds',
    StatusCode LowCardinality(String) CODEC(ZSTD(1)) COMMENT 'Unset, Ok or Error',
    StatusMessage String CODEC(ZSTD(1)) COMMENT 'Status description',
    Events Nested
    (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)) COMMENT 'The span''s events: time, name, attributes',
    Links Nested
    (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)) COMMENT 'The span''s links to other spans: trace id, span id, trace state, attributes',
    ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(ResourceAttributes, 'Array(Tuple(String, String))')) COMMENT 'ResourceAttributes as key=value items, for the full-text index of newer exporters',
    SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(SpanAttributes, 'Array(Tuple(String, String))')) COMMENT 'SpanAttributes as key=value items',
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
)
ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000;

-- When each trace starts and ends, for trace views that look a trace up by its id.
CREATE TABLE IF NOT EXISTS otel_traces_trace_id_ts
(
    TraceId String CODEC(ZSTD(1)) COMMENT 'Trace id (hex)',
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)) COMMENT 'Earliest span start of the trace (read with min: rows are not merged)',
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1)) COMMENT 'Latest span start of the trace (read with max)'
)
ENGINE = MergeTree
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
TTL toDateTime(Start) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS otel_traces_trace_id_ts_mv
TO otel_traces_trace_id_ts
AS SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End
FROM otel_traces
WHERE TraceId != ''
GROUP BY TraceId;
