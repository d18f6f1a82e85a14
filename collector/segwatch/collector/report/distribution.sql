-- One segment's distribution of one quantity in the window and in its baseline,
-- for the report's distribution plots: the log histogram's buckets as the values
-- they stand for (sw_key_value, as the detectors read them, at the store's
-- histogram accuracy), the category counts, and the missing calls.
--
-- Parameters: model, version, stage, dim, value, quantity, window_start,
-- window_end, baseline_start, baseline_end. Rows: is_current 0 (the baseline)
-- and 1 (the window), each present only when it had calls.
WITH
/*@statistics*/
assumeNotNull((SELECT (1 + a) / (1 - a) FROM (
    SELECT toFloat64OrDefault(argMax(value, set_at), 0.01) AS a
    FROM ml_store_settings WHERE name = 'histogram_accuracy'))) AS histogram_gamma
SELECT is_current,
       arrayMap(k -> sw_key_value(k, histogram_gamma), mapKeys(hist)) AS bucket_values,
       mapValues(hist) AS bucket_calls,
       mapKeys(cats) AS category_names,
       mapValues(cats) AS category_calls,
       missing_calls, calls
FROM (
    SELECT bucket_start >= {window_start:DateTime('UTC')} AS is_current,
           sumMap(histogram) AS hist, sumMap(categories) AS cats,
           sum(missing) AS missing_calls, sum(count) AS calls
    FROM ml_segment_aggregates
    WHERE model_name = {model:String} AND model_version = {version:String}
      AND model_stage = {stage:String} AND quantity = {quantity:String}
      AND segment_dim = {dim:String} AND segment_value = {value:String}
      AND bucket_start >= {baseline_start:DateTime('UTC')}
      AND bucket_start < {window_end:DateTime('UTC')}
      -- (and its 5-minute slices, the sorting key's: the read skips to them; see
      -- segwatch.clickhouse.rollups.MINUTE_ROWS_BY_KEY)
      AND toStartOfFiveMinutes(bucket_start) >= toStartOfFiveMinutes({baseline_start:DateTime('UTC')})
      AND toStartOfFiveMinutes(bucket_start) < {window_end:DateTime('UTC')}
      AND (bucket_start < {baseline_end:DateTime('UTC')} OR bucket_start >= {window_start:DateTime('UTC')})
    GROUP BY is_current
)
ORDER BY is_current
