-- One model's anomalies by incident (segwatch.clickhouse's anomaly_incidents.sql, what
-- segwatch anomalies reads): every open incident, whole, and those resolved since {start};
-- each anomaly with the sentence, score, support and exemplar trace ids of the last window
-- it was open in (a resolved anomaly keeps the explanation it opened with), its incident,
-- role (root or consequence) and the reason it belongs. Ordered as segwatch anomalies lists them: open
-- incidents first, the most severe first, the root first in each. The first 100; each row
-- carries the totals before the LIMIT (`total`, `open_total`, `open_incidents`).
-- Parameters: model, start.
SELECT current_state AS state, opened_at, resolved_at, detector, model_version, model_stage,
       segment_dim, segment_value, quantity, open_window_start AS window_start,
       opened_at AS window_end, last_score AS score, last_support AS support,
       last_exemplars AS exemplar_trace_ids, last_details AS details, incident, role, reason,
       count() OVER () AS total, countIf(current_state = 'open') OVER () AS open_total,
       uniqExactIf(incident_key, current_state = 'open') OVER () AS open_incidents
FROM (
    SELECT *,
           max(current_state = 'open') OVER incident_rows AS incident_open,
           max(last_change) OVER incident_rows AS incident_change,
           max(severity) OVER incident_rows AS incident_severity
    FROM (/*@anomaly_incidents*/)
    WINDOW incident_rows AS (PARTITION BY incident_key)
)
-- whole incidents: every open one (its resolved anomalies too), those changed since start
WHERE incident_open OR incident_change >= {start:DateTime('UTC')}
ORDER BY incident_open DESC, incident_severity DESC, incident_key, role = 'root' DESC,
         score DESC
LIMIT 100
