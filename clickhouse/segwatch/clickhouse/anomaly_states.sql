-- Every anomaly's current state, from its lifecycle in ml_anomaly_events: one row per
-- anomaly (detector, model, version, stage, segment, quantity). Its state is that of
-- its latest transition (argMax(state, window_end)): 'open' or 'resolved'. What it
-- opened with (score, support, exemplars, sentence, window) is read from its latest
-- 'open' transition, so a resolved anomaly keeps its explanation, not its
-- resolution's "not found in the last windows".
--
-- A subquery: segwatch.clickhouse.queries wraps it (list_anomalies, the scheduler's
-- segwatch_open_anomalies gauge). FINAL: one row per transition whatever the merges
-- have done so far.
-- Parameter: model (empty: every model).
SELECT detector, model_name, model_version, model_stage, segment_dim, segment_value, quantity,
       argMax(state, window_end) AS current_state,
       maxIf(window_end, state = 'open') AS opened_at,
       if(current_state = 'resolved', toNullable(max(window_end)), NULL) AS resolved_at,
       max(window_end) AS last_change,
       argMaxIf(window_start, window_end, state = 'open') AS open_window_start,
       argMaxIf(score, window_end, state = 'open') AS last_score,
       argMaxIf(threshold, window_end, state = 'open') AS last_threshold,
       argMaxIf(support, window_end, state = 'open') AS last_support,
       argMaxIf(exemplar_trace_ids, window_end, state = 'open') AS last_exemplars,
       argMaxIf(details, window_end, state = 'open') AS last_details
FROM ml_anomaly_events FINAL
WHERE {model:String} = '' OR model_name = {model:String}
GROUP BY detector, model_name, model_version, model_stage, segment_dim, segment_value, quantity
