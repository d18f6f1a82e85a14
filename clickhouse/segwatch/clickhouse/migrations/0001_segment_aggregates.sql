-- Per-segment, mergeable aggregates of every monitored quantity.
-- Collectors insert partial rows; ClickHouse merges rows with the same key, so
-- any number of collectors can write the same minute. Always read with
-- GROUP BY and the matching aggregate (sum, min, max, sumMap), never row by row.
CREATE TABLE IF NOT EXISTS ml_segment_aggregates
(
    model_name LowCardinality(String) COMMENT 'Model that made the calls (span attribute ml.model.name)',
    model_version LowCardinality(String) COMMENT 'Model version (ml.model.version); empty when the span had none',
    model_stage LowCardinality(String) COMMENT 'Deployment stage (ml.model.stage): serving, shadow, canary, training, validation',
    bucket_start DateTime('UTC') COMMENT 'Start of the one-minute bucket, from each span''s own start time (not its arrival)',
    segment_dim LowCardinality(String) COMMENT 'What splits the traffic, e.g. feature.country; __all__ for the whole model',
    segment_value String COMMENT 'The segment within segment_dim, e.g. BR, [100, 1000), MISSING, __other__; __all__ for the whole model',
    quantity LowCardinality(String) COMMENT 'What is measured: feature.<name>, output.<name> or metric.<name>',
    count SimpleAggregateFunction(sum, Float64) COMMENT 'Model calls in this segment and minute, each weighted by its ml.sample.weight (default 1): the segment volume, estimated when spans are sampled',
    sampled SimpleAggregateFunction(sum, UInt64) COMMENT 'Rows actually received for these calls, one per single-call span and N per batch span (the sample behind the weighted numbers: use it as statistical support)',
    missing SimpleAggregateFunction(sum, Float64) COMMENT 'Weighted calls where the quantity was absent or null',
    numeric_count SimpleAggregateFunction(sum, Float64) COMMENT 'Weighted calls where the quantity was a finite number (sum, sum_sq, min, max and histogram cover these)',
    sum SimpleAggregateFunction(sum, Float64) COMMENT 'Weighted sum of the finite numeric values; mean = sum / numeric_count',
    sum_sq SimpleAggregateFunction(sum, Float64) COMMENT 'Weighted sum of squares of the finite numeric values, for the variance',
    min SimpleAggregateFunction(min, Float64) COMMENT 'Smallest finite numeric value (+inf when there was none)',
    max SimpleAggregateFunction(max, Float64) COMMENT 'Largest finite numeric value (-inf when there was none)',
    histogram SimpleAggregateFunction(sumMap, Map(Int16, Float64)) COMMENT 'Weighted log-bucketed histogram of the finite numeric values, relative accuracy 1%: key k = sign(x) * (ceil(ln|x| / ln(1.01/0.99)) + 16384), clamped to [1, 32767]; 0 for x = 0. See segwatch.collector.histogram',
    categories SimpleAggregateFunction(sumMap, Map(String, Float64)) COMMENT 'Weighted counts of the non-numeric values (strings, booleans, NaN and infinities as nan/inf/-inf); values beyond the model''s top K for this quantity fold into __other__',
    exemplar_trace_ids SimpleAggregateFunction(groupUniqArrayArray(5), Array(String)) COMMENT 'Up to five trace ids (hex) of calls in this segment and minute, to jump from an aggregate to real traces'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket_start)
ORDER BY (model_name, model_stage, model_version, quantity, segment_dim, segment_value, bucket_start)
COMMENT 'segwatch: per-segment aggregates per model, version, stage, minute and quantity';
