-- Incidents: the anomalies that share a cause, one incident per fault. A feature
-- drifting in one segment also moves the score there (psi_drift on both, a
-- metric_shift on the score) and shows from the other side (the segment of calls
-- where it went missing differs in the dimension it went missing for): one fault,
-- several anomalies. Each anomaly that opens joins the open incident it belongs to,
-- or opens one; the incident names a root (the input that changed, in the segment
-- that explains it) and the others are its consequences. One row per member
-- anomaly: running a window again, a root that changes or a member that resolves
-- writes the row again (the latest recorded_at wins: read with FINAL).
CREATE TABLE IF NOT EXISTS ml_incident_members
(
    recorded_at DateTime64(3, 'UTC') COMMENT 'When the detector run that wrote this version of the row finished',
    incident_id String COMMENT 'The incident (16 hex digits), the same in ml.anomaly events and webhooks',
    model_name LowCardinality(String) COMMENT 'Model',
    model_version LowCardinality(String) COMMENT 'Model version of the member anomaly',
    model_stage LowCardinality(String) COMMENT 'Deployment stage of the member anomaly',
    detector LowCardinality(String) COMMENT 'Detector of the member anomaly, e.g. psi_drift',
    segment_dim LowCardinality(String) COMMENT 'Segment dimension of the member anomaly (__all__: the whole model)',
    segment_value String COMMENT 'Segment value of the member anomaly',
    quantity LowCardinality(String) COMMENT 'What changed, e.g. feature.amount',
    anomaly_opened_at DateTime('UTC') COMMENT 'End of the window at which the member anomaly opened (an anomaly that opens again is a new member)',
    role LowCardinality(String) COMMENT 'root (the cause the incident is named by) or consequence',
    relation LowCardinality(String) COMMENT 'How it joined: first (it opened the incident), same_segment (the same segment, or a cross within it), mirror (the same calls seen from the other dimension), explained (without the calls of the root''s segment its statistic no longer passes)',
    reason String COMMENT 'A sentence: why this anomaly belongs to the incident (empty for the root)',
    state LowCardinality(String) COMMENT 'The member anomaly''s state: open or resolved',
    resolved_at Nullable(DateTime('UTC')) COMMENT 'End of the window at which it resolved',
    score Float64 COMMENT 'Its score when it opened',
    threshold Float64 COMMENT 'Its detector''s threshold',
    support UInt64 COMMENT 'Calls in its segment during the window it opened in',
    baseline_value Float64 COMMENT 'Its detector''s baseline value when it opened (the quantity''s mean; a share for data_quality, the gap for bias; NaN for categories)',
    current_value Float64 COMMENT 'The same in the window it opened in',
    exemplar_trace_ids Array(String) COMMENT 'Trace ids (hex) of calls in its segment during that window',
    details String COMMENT 'Its sentence: what changed, by how much, against what'
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toYYYYMM(anomaly_opened_at)
ORDER BY (model_name, incident_id, detector, model_stage, model_version, segment_dim, segment_value, quantity, anomaly_opened_at)
COMMENT 'segwatch: the anomalies of each incident, root and consequences (read with FINAL)';

-- One row per incident: open while any of its anomalies is open.
CREATE VIEW IF NOT EXISTS ml_incidents AS
SELECT
    incident_id,
    model_name,
    if(countIf(member_state = 'open') > 0, 'open', 'resolved') AS state,
    min(anomaly_opened_at) AS opened_at,
    if(countIf(member_state = 'open') > 0, NULL, max(member_resolved_at)) AS resolved_at,
    anyIf(detector, role = 'root') AS root_detector,
    anyIf(model_version, role = 'root') AS root_model_version,
    anyIf(model_stage, role = 'root') AS root_model_stage,
    anyIf(segment_dim, role = 'root') AS root_segment_dim,
    anyIf(segment_value, role = 'root') AS root_segment_value,
    anyIf(quantity, role = 'root') AS root_quantity,
    anyIf(details, role = 'root') AS root_details,
    max(score / greatest(threshold, 1e-12)) AS severity,
    count() AS anomalies,
    countIf(member_state = 'open') AS open_anomalies,
    arraySort(groupArrayIf(concat(detector, ': ', quantity, ' for ', segment_dim, '=', segment_value),
                           role = 'consequence')) AS consequences
FROM (SELECT *, state AS member_state, resolved_at AS member_resolved_at FROM ml_incident_members FINAL)
GROUP BY incident_id, model_name
COMMENT 'segwatch: incidents, one row each: state, root (the cause), severity (largest score over threshold) and consequences';
