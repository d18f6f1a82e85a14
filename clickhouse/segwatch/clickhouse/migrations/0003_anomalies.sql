-- What the detectors found. One row per (detector, model, segment, quantity,
-- window): running a detector again on the same window replaces, never adds.
CREATE TABLE IF NOT EXISTS ml_anomalies
(
    detected_at DateTime64(3, 'UTC') COMMENT 'When the detector run that found it finished',
    detector LowCardinality(String) COMMENT 'Detector name from the manifest, e.g. psi_drift',
    model_name LowCardinality(String) COMMENT 'Model',
    model_version LowCardinality(String) COMMENT 'Model version',
    model_stage LowCardinality(String) COMMENT 'Deployment stage',
    segment_dim LowCardinality(String) COMMENT 'Segment dimension, e.g. feature.country (__all__: the whole model)',
    segment_value String COMMENT 'Segment value, e.g. BR',
    quantity LowCardinality(String) COMMENT 'What changed, e.g. feature.amount',
    window_start DateTime('UTC') COMMENT 'Start of the window that was tested',
    window_end DateTime('UTC') COMMENT 'End (exclusive) of the window that was tested',
    baseline_start DateTime('UTC') COMMENT 'Start of the baseline it was compared with',
    baseline_end DateTime('UTC') COMMENT 'End (exclusive) of the baseline',
    score Float64 COMMENT 'The detector''s statistic, e.g. PSI',
    threshold Float64 COMMENT 'Score above which the detector reports',
    p_value Nullable(Float64) COMMENT 'p-value where the detector defines one',
    support UInt64 COMMENT 'Calls in the segment during the window',
    baseline_support UInt64 COMMENT 'Calls in the segment during the baseline',
    baseline_value Float64 COMMENT 'The quantity''s mean in the baseline (NaN for categories)',
    current_value Float64 COMMENT 'The quantity''s mean in the window (NaN for categories)',
    exemplar_trace_ids Array(String) COMMENT 'Trace ids (hex) of calls in the segment during the window',
    details String COMMENT 'A sentence a person reads: what changed, by how much, against what'
)
ENGINE = ReplacingMergeTree(detected_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (detector, model_name, model_stage, model_version, segment_dim, segment_value, quantity, window_start)
COMMENT 'segwatch: anomalies found by the detectors';
