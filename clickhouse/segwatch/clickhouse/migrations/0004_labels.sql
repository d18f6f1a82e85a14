-- Delayed ground truth, one row per label record (event name ml.label), and a
-- view that joins each labelled prediction to its model call by prediction id.
CREATE TABLE IF NOT EXISTS ml_labels
(
    timestamp DateTime64(9, 'UTC') COMMENT 'When the truth became known (the log record''s time)',
    received_at DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'When the collector stored it',
    model_name LowCardinality(String) COMMENT 'ml.model.name of the labelled prediction',
    prediction_id String COMMENT 'ml.prediction.id of the labelled prediction',
    numbers Map(LowCardinality(String), Float64) COMMENT 'Numeric labels by name, e.g. label.amount_lost',
    strings Map(LowCardinality(String), String) COMMENT 'Text and boolean labels by name, e.g. label.is_fraud = true',
    trace_id String COMMENT 'Trace id (hex) of the log record, if it was emitted inside a trace',
    service_name LowCardinality(String) COMMENT 'service.name of the resource that sent the label'
)
ENGINE = ReplacingMergeTree(timestamp)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (model_name, prediction_id)
COMMENT 'segwatch: delayed labels; the latest label of a prediction wins (read with FINAL)';

CREATE VIEW IF NOT EXISTS ml_labeled_calls AS
SELECT
    c.timestamp AS timestamp,
    c.model_name AS model_name,
    c.model_version AS model_version,
    c.model_stage AS model_stage,
    c.prediction_id AS prediction_id,
    c.trace_id AS trace_id,
    c.numbers AS numbers,
    c.strings AS strings,
    l.timestamp AS label_timestamp,
    l.numbers AS label_numbers,
    l.strings AS label_strings
FROM ml_model_calls AS c
INNER JOIN (SELECT * FROM ml_labels FINAL) AS l
    ON c.model_name = l.model_name AND c.prediction_id = l.prediction_id
WHERE c.prediction_id != ''
COMMENT 'segwatch: each labelled model call with its latest label (labels may arrive days later)';
