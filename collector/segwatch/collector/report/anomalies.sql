-- One model's anomalies from their lifecycle (ml_anomaly_events): every open one, and
-- those resolved since {start}; each with the sentence, score, support and exemplar
-- trace ids of the last window it was open in (a resolved anomaly keeps the
-- explanation it opened with). The first 100; each row carries the totals before the
-- LIMIT (`total`, `open_total`). Parameters: model, start.
SELECT current_state AS state, opened_at, resolved_at, detector, model_version, model_stage,
       segment_dim, segment_value, quantity, open_window_start AS window_start,
       open_window_end AS window_end, last_score AS score, last_support AS support,
       exemplars AS exemplar_trace_ids, open_details AS details,
       count() OVER () AS total, countIf(current_state = 'open') OVER () AS open_total
FROM (
    SELECT detector, model_version, model_stage, segment_dim, segment_value, quantity,
           argMax(state, window_end) AS current_state,
           maxIf(window_end, state = 'open') AS opened_at,
           if(current_state = 'resolved', toNullable(max(window_end)), NULL) AS resolved_at,
           max(window_end) AS last_change,
           argMaxIf(window_start, window_end, state = 'open') AS open_window_start,
           maxIf(window_end, state = 'open') AS open_window_end,
           argMaxIf(score, window_end, state = 'open') AS last_score,
           argMaxIf(support, window_end, state = 'open') AS last_support,
           argMaxIf(exemplar_trace_ids, window_end, state = 'open') AS exemplars,
           argMaxIf(details, window_end, state = 'open') AS open_details
    FROM ml_anomaly_events FINAL
    WHERE model_name = {model:String}
    GROUP BY detector, model_version, model_stage, segment_dim, segment_value, quantity
)
WHERE current_state = 'open' OR last_change >= {start:DateTime('UTC')}
ORDER BY current_state = 'open' DESC, last_change DESC, score DESC
LIMIT 100
