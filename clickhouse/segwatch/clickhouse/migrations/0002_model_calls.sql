-- One row per monitored model call, for label joins and ad-hoc analysis.
-- Kept for 30 days; the aggregates above are the long-term record.
CREATE TABLE IF NOT EXISTS ml_model_calls
(
    timestamp DateTime64(9, 'UTC') COMMENT 'Start time of the model-call span',
    trace_id String COMMENT 'Trace id (hex) of the span',
    span_id String COMMENT 'Span id (hex)',
    duration_ns UInt64 COMMENT 'Span duration in nanoseconds',
    model_name LowCardinality(String) COMMENT 'ml.model.name',
    model_version LowCardinality(String) COMMENT 'ml.model.version (empty when absent)',
    model_stage LowCardinality(String) COMMENT 'ml.model.stage',
    operation LowCardinality(String) COMMENT 'ml.operation, e.g. predict',
    prediction_id String COMMENT 'ml.prediction.id, joins delayed labels (empty when absent)',
    service_name LowCardinality(String) COMMENT 'service.name of the resource that sent the span',
    numbers Map(LowCardinality(String), Float64) COMMENT 'Numeric values by quantity name, e.g. feature.amount, output.score, metric.confidence',
    strings Map(LowCardinality(String), String) COMMENT 'Non-numeric values by quantity name, e.g. feature.country; booleans as true/false'
)
ENGINE = MergeTree
PARTITION BY toDate(timestamp)
ORDER BY (model_name, model_stage, model_version, timestamp)
TTL toDateTime(timestamp) + INTERVAL 30 DAY
COMMENT 'segwatch: raw model calls, one row per span, kept 30 days';
