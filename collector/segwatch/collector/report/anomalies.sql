-- One model's anomalies from their lifecycle (segwatch.clickhouse's anomaly_states.sql,
-- the query segwatch anomalies reads): every open one, and those resolved since {start};
-- each with the sentence, score, support and exemplar trace ids of the last window it
-- was open in (a resolved anomaly keeps the explanation it opened with), and its
-- incident (ml_incident_members: the anomalies that share a cause), role (root or
-- consequence) and the reason it belongs. Grouped by incident as segwatch anomalies
-- lists them: open incidents first, the most severe first, the root first in each. The
-- first 100; each row carries the totals before the LIMIT (`total`, `open_total`,
-- `open_incidents`).
-- Parameters: model, start.
SELECT state, opened_at, resolved_at, detector, model_version, model_stage, segment_dim,
       segment_value, quantity, window_start, window_end, score, support,
       exemplar_trace_ids, details, incident, role, reason,
       count() OVER () AS total, countIf(state = 'open') OVER () AS open_total,
       uniqExactIf(incident_key, state = 'open') OVER () AS open_incidents
FROM (
    SELECT *,
           max(state = 'open') OVER incident_rows AS incident_open,
           max(score / greatest(last_threshold, 1e-12)) OVER incident_rows AS severity
    FROM (
        SELECT s.current_state AS state, s.opened_at AS opened_at, s.resolved_at AS resolved_at,
               s.detector AS detector, s.model_version AS model_version,
               s.model_stage AS model_stage, s.segment_dim AS segment_dim,
               s.segment_value AS segment_value, s.quantity AS quantity,
               s.open_window_start AS window_start, s.opened_at AS window_end,
               s.last_score AS score, s.last_threshold AS last_threshold,
               s.last_support AS support,
               s.last_exemplars AS exemplar_trace_ids, s.last_details AS details,
               s.last_change AS last_change,
               m.incident_id AS incident, if(m.role = '', 'root', m.role) AS role,
               m.reason AS reason,
               -- an anomaly opened before incidents were recorded stands alone
               if(m.incident_id = '', concat(s.detector, '\x1f', s.model_version, '\x1f',
                  s.model_stage, '\x1f', s.segment_dim, '\x1f', s.segment_value, '\x1f',
                  s.quantity), m.incident_id) AS incident_key
        FROM (/*@anomaly_states*/) AS s
        LEFT JOIN (SELECT * FROM ml_incident_members FINAL WHERE model_name = {model:String}) AS m
            ON m.detector = s.detector AND m.model_name = s.model_name
           AND m.model_version = s.model_version AND m.model_stage = s.model_stage
           AND m.segment_dim = s.segment_dim AND m.segment_value = s.segment_value
           AND m.quantity = s.quantity AND m.anomaly_opened_at = s.opened_at
        WHERE s.current_state = 'open' OR s.last_change >= {start:DateTime('UTC')}
    )
    WINDOW incident_rows AS (PARTITION BY incident_key)
)
ORDER BY incident_open DESC, severity DESC, incident_key, role = 'root' DESC, score DESC
LIMIT 100
