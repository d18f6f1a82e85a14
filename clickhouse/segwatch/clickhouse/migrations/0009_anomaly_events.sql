-- The anomaly lifecycle. ml_anomalies holds what each detector run found (a
-- finding per segment, quantity and window); an anomaly *opens* when its key
-- (detector, model, version, stage, segment, quantity) was found in enough of
-- the last windows (the detector's persistence) and *resolves* when it was
-- found in none of them. Each transition is one row here; running a window
-- again replaces its transitions, never adds to them.
CREATE TABLE IF NOT EXISTS ml_anomaly_events
(
    recorded_at DateTime64(3, 'UTC') COMMENT 'When the run that made the transition finished',
    state LowCardinality(String) COMMENT 'open or resolved',
    detector LowCardinality(String) COMMENT 'Detector name from the manifest',
    model_name LowCardinality(String) COMMENT 'Model',
    model_version LowCardinality(String) COMMENT 'Model version',
    model_stage LowCardinality(String) COMMENT 'Deployment stage',
    segment_dim LowCardinality(String) COMMENT 'Segment dimension (__all__: the whole model)',
    segment_value String COMMENT 'Segment value',
    quantity LowCardinality(String) COMMENT 'What changed, e.g. feature.amount',
    window_start DateTime('UTC') COMMENT 'Start of the window whose run made the transition',
    window_end DateTime('UTC') COMMENT 'End (exclusive) of that window',
    score Float64 COMMENT 'The score of the latest finding',
    threshold Float64 COMMENT 'Its threshold',
    p_value Nullable(Float64) COMMENT 'Its p-value where the detector defines one',
    support UInt64 COMMENT 'Calls in the segment during the latest finding''s window',
    exemplar_trace_ids Array(String) COMMENT 'Trace ids (hex) of calls in the segment during that window',
    details String COMMENT 'What happened: the finding''s sentence, or why the anomaly resolved',
    statistics Map(LowCardinality(String), Float64) COMMENT 'The numbers behind the latest finding'
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toYYYYMM(window_end)
ORDER BY (detector, model_name, model_stage, model_version, segment_dim, segment_value, quantity, window_end, state)
COMMENT 'segwatch: anomalies opening and resolving (one row per transition)';
