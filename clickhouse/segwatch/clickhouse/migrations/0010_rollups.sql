-- Roll-ups of ml_segment_aggregates for the detectors: the same aggregates in
-- 5-minute and 1-hour buckets, so a run reads a few rows per segment and
-- quantity instead of every minute of its baseline. The detector runner rolls
-- up the buckets a run needs (segwatch.clickhouse.rollups) from the minute
-- table, which stays the source of truth: rolling a bucket up again (late data)
-- replaces its rows (ReplacingMergeTree on rolled_at; read with FINAL).
CREATE TABLE IF NOT EXISTS ml_segment_rollup_5m
(
    model_name LowCardinality(String) COMMENT 'Model',
    model_version LowCardinality(String) COMMENT 'Model version',
    model_stage LowCardinality(String) COMMENT 'Deployment stage',
    bucket_start DateTime('UTC') COMMENT 'Start of the bucket (5 minutes or 1 hour long: see the table name)',
    segment_dim LowCardinality(String) COMMENT 'Segment dimension (__all__: the whole model)',
    segment_value String COMMENT 'Segment value',
    quantity LowCardinality(String) COMMENT 'What is measured: feature.<name>, output.<name> or metric.<name>',
    count Float64 COMMENT 'Weighted model calls, as in ml_segment_aggregates',
    sampled UInt64 COMMENT 'Rows received',
    missing Float64 COMMENT 'Weighted calls where the quantity was absent or null',
    numeric_count Float64 COMMENT 'Weighted calls where the quantity was a finite number',
    sum Float64 COMMENT 'Weighted sum of the finite numeric values',
    sum_sq Float64 COMMENT 'Weighted sum of their squares',
    min Float64 COMMENT 'Smallest finite numeric value',
    max Float64 COMMENT 'Largest finite numeric value',
    histogram Map(Int16, Float64) COMMENT 'Weighted log-bucketed histogram (keys as in ml_segment_aggregates)',
    categories Map(String, Float64) COMMENT 'Weighted counts of the non-numeric values',
    exemplar_trace_ids Array(String) COMMENT 'Up to five trace ids (hex) of calls in the bucket',
    rolled_at DateTime64(3, 'UTC') COMMENT 'When this row was rolled up; a later roll-up of the bucket replaces it'
)
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYYYYMM(bucket_start)
ORDER BY (model_name, model_stage, model_version, bucket_start, quantity, segment_dim, segment_value)
COMMENT 'segwatch: ml_segment_aggregates rolled up to 5-minute buckets, for the detectors';

CREATE TABLE IF NOT EXISTS ml_segment_rollup_1h AS ml_segment_rollup_5m
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYYYYMM(bucket_start)
ORDER BY (model_name, model_stage, model_version, bucket_start, quantity, segment_dim, segment_value)
COMMENT 'segwatch: ml_segment_aggregates rolled up to 1-hour buckets, for the detectors';
