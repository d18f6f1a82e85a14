-- One model's anomalies from their lifecycle (segwatch.clickhouse's anomaly_states.sql,
-- the query segwatch anomalies reads): every open one, and those resolved since {start};
-- each with the sentence, score, support and exemplar trace ids of the last window it
-- was open in (a resolved anomaly keeps the explanation it opened with). The first 100;
-- each row carries the totals before the LIMIT (`total`, `open_total`).
-- Parameters: model, start.
SELECT current_state AS state, opened_at, resolved_at, detector, model_version, model_stage,
       segment_dim, segment_value, quantity, open_window_start AS window_start,
       opened_at AS window_end, last_score AS score, last_support AS support,
       last_exemplars AS exemplar_trace_ids, last_details AS details,
       count() OVER () AS total, countIf(current_state = 'open') OVER () AS open_total
FROM (/*@anomaly_states*/)
WHERE current_state = 'open' OR last_change >= {start:DateTime('UTC')}
ORDER BY current_state = 'open' DESC, last_change DESC, score DESC
LIMIT 100
