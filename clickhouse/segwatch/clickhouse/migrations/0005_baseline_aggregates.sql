-- Baseline profiles: the same per-segment aggregates, computed from a training
-- (or any reference) data set instead of live traffic, without a time bucket.
-- Detectors compare live windows with them (e.g. psi_drift_training).
CREATE TABLE IF NOT EXISTS ml_baseline_aggregates
(
    baseline_name LowCardinality(String) COMMENT 'Name of the profile, e.g. training (segwatch baseline --name)',
    model_name LowCardinality(String) COMMENT 'Model the profile describes',
    model_version LowCardinality(String) COMMENT 'Model version the profile belongs to (empty: every version)',
    segment_dim LowCardinality(String) COMMENT 'What splits the data, as in ml_segment_aggregates',
    segment_value String COMMENT 'The segment within segment_dim',
    quantity LowCardinality(String) COMMENT 'What is measured: feature.<name>, output.<name> or metric.<name>',
    count SimpleAggregateFunction(sum, Float64) COMMENT 'Rows of the data set in this segment (weighted)',
    sampled SimpleAggregateFunction(sum, UInt64) COMMENT 'Rows of the data set in this segment',
    missing SimpleAggregateFunction(sum, Float64) COMMENT 'Rows where the quantity was absent or null',
    numeric_count SimpleAggregateFunction(sum, Float64) COMMENT 'Rows where the quantity was a finite number',
    sum SimpleAggregateFunction(sum, Float64) COMMENT 'Sum of the finite numeric values',
    sum_sq SimpleAggregateFunction(sum, Float64) COMMENT 'Sum of squares of the finite numeric values',
    min SimpleAggregateFunction(min, Float64) COMMENT 'Smallest finite numeric value',
    max SimpleAggregateFunction(max, Float64) COMMENT 'Largest finite numeric value',
    histogram SimpleAggregateFunction(sumMap, Map(Int16, Float64)) COMMENT 'Log-bucketed histogram, keys as in ml_segment_aggregates',
    categories SimpleAggregateFunction(sumMap, Map(String, Float64)) COMMENT 'Counts of the non-numeric values',
    loaded_at SimpleAggregateFunction(max, DateTime64(3, 'UTC')) COMMENT 'When the profile was last loaded'
)
ENGINE = AggregatingMergeTree
ORDER BY (baseline_name, model_name, model_version, quantity, segment_dim, segment_value)
COMMENT 'segwatch: baseline profiles (training sets) per segment, to compare live traffic with';
