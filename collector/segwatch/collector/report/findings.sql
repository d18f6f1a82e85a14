-- One model's latest detector findings (ml_anomalies) in windows ending in [start, end],
-- latest window first: the 50 the page's table shows, each row with the period's
-- total (`total`, before the LIMIT). Parameters: model, start, end.
SELECT window_start, window_end, baseline_start, baseline_end, detector, model_version,
       model_stage, segment_dim, segment_value, quantity, score, threshold, p_value, support,
       baseline_value, current_value, exemplar_trace_ids, details, count() OVER () AS total
FROM ml_anomalies FINAL
WHERE model_name = {model:String}
  AND window_end >= {start:DateTime('UTC')} AND window_end <= {end:DateTime('UTC')}
ORDER BY window_end DESC, score DESC
LIMIT 50
