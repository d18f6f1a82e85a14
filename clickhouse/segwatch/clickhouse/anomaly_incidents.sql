-- Every anomaly's current state (anomaly_states.sql, at the marker) with its incident:
-- ml_incident_members joined on the anomaly's key and the window it opened at. Columns:
-- anomaly_states.sql's, then incident (its id; '' for an anomaly opened before incidents
-- were recorded), role (root or consequence), reason (why a consequence belongs),
-- severity (score over threshold), specificity (2+ for a cross, 1 for a segment, 0 for
-- the whole model) and incident_key (the incident id, or the anomaly's own key when it
-- stands alone), to group and order by incident as segwatch anomalies and the report do.
--
-- A subquery: segwatch.clickhouse.queries wraps it (list_anomalies), and the report's
-- anomalies.sql. Parameter: model (empty: every model).
SELECT s.*,
       m.incident_id AS incident,
       if(m.role = '', 'root', m.role) AS role,
       m.reason AS reason,
       s.last_score / greatest(s.last_threshold, 1e-12) AS severity,
       if(s.segment_dim = '__all__', 0, 1 + length(splitByString('×', s.segment_dim)))
           AS specificity,
       if(m.incident_id = '', concat(s.detector, '\x1f', s.model_name, '\x1f', s.model_version,
          '\x1f', s.model_stage, '\x1f', s.segment_dim, '\x1f', s.segment_value, '\x1f',
          s.quantity), m.incident_id) AS incident_key
FROM (/*@anomaly_states*/) AS s
LEFT JOIN (SELECT * FROM ml_incident_members FINAL
           WHERE {model:String} = '' OR model_name = {model:String}) AS m
    ON m.detector = s.detector AND m.model_name = s.model_name
   AND m.model_version = s.model_version AND m.model_stage = s.model_stage
   AND m.segment_dim = s.segment_dim AND m.segment_value = s.segment_value
   AND m.quantity = s.quantity AND m.anomaly_opened_at = s.opened_at
