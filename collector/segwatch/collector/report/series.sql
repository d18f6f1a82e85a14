-- One quantity over time in one segment and in the whole model, for the report's
-- time series: per {step} seconds, the calls, the mean of the numbers, the missing
-- calls and the category counts. `own`: the segment's rows; `whole_model`: the whole
-- model's (a finding on the whole model has rows that are both).
--
-- Parameters: model, version, stage, dim, value, quantity, start, end, step.
SELECT toStartOfInterval(bucket_start, toIntervalSecond({step:UInt32}), 'UTC') AS t,
       segment_dim = '__all__' AS whole_model,
       segment_dim = {dim:String} AND segment_value = {value:String} AS own,
       sum(count) AS calls,
       sum(missing) AS missing_calls,
       if(sum(numeric_count) > 0, sum(sum) / sum(numeric_count), nan) AS mean,
       sumMap(categories) AS cats
FROM ml_segment_aggregates
WHERE model_name = {model:String} AND model_version = {version:String}
  AND model_stage = {stage:String} AND quantity = {quantity:String}
  AND ((segment_dim = {dim:String} AND segment_value = {value:String}) OR segment_dim = '__all__')
  AND bucket_start >= {start:DateTime('UTC')} AND bucket_start < {end:DateTime('UTC')}
  -- (and its 5-minute slices, the sorting key's: the read skips to them; see
  -- segwatch.clickhouse.rollups.MINUTE_ROWS_BY_KEY)
  AND toStartOfFiveMinutes(bucket_start) >= toStartOfFiveMinutes({start:DateTime('UTC')})
  AND toStartOfFiveMinutes(bucket_start) < {end:DateTime('UTC')}
GROUP BY t, whole_model, own
ORDER BY whole_model, t
