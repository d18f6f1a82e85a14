-- The findings the report shows up close and frames in its heat map: the latest
-- finding of each detector for each segment and quantity, among the windows ending
-- in [start, end], and for every anomaly still open (whose latest finding may be
-- older), latest window first. Unlike findings.sql (the table), nothing is cut:
-- the page says which of them it leaves out. Parameters: model, start, end.
SELECT window_start, window_end, baseline_start, baseline_end, detector, model_version,
       model_stage, segment_dim, segment_value, quantity, score, threshold, p_value, support,
       baseline_value, current_value, exemplar_trace_ids, details
FROM ml_anomalies FINAL
WHERE model_name = {model:String} AND window_end <= {end:DateTime('UTC')}
  AND (window_end >= {start:DateTime('UTC')}
       OR (detector, model_version, model_stage, segment_dim, segment_value, quantity) IN (
           SELECT detector, model_version, model_stage, segment_dim, segment_value, quantity
           FROM ml_anomaly_events FINAL
           WHERE model_name = {model:String}
           GROUP BY detector, model_version, model_stage, segment_dim, segment_value, quantity
           HAVING argMax(state, window_end) = 'open'))
ORDER BY window_end DESC, score DESC
LIMIT 1 BY detector, model_version, model_stage, segment_dim, segment_value, quantity
