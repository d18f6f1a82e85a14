-- The models with calls in [start, end): their first and last minute and their calls
-- (of the whole-model segment; every quantity counts the same calls, so the
-- largest quantity's count is taken). Parameters: start, end, model ('' for all).
SELECT model_name, min(first_minute) AS first_minute, max(last_minute) AS last_minute,
       max(calls) AS calls
FROM (
    SELECT model_name, quantity, min(bucket_start) AS first_minute,
           max(bucket_start) AS last_minute, sum(count) AS calls
    FROM ml_segment_aggregates
    WHERE segment_dim = '__all__' AND ({model:String} = '' OR model_name = {model:String})
      AND bucket_start >= {start:DateTime('UTC')} AND bucket_start < {end:DateTime('UTC')}
      -- (and its 5-minute slices, the sorting key's: the read skips to them; see
      -- segwatch.clickhouse.rollups.MINUTE_ROWS_BY_KEY)
      AND toStartOfFiveMinutes(bucket_start) >= toStartOfFiveMinutes({start:DateTime('UTC')})
      AND toStartOfFiveMinutes(bucket_start) < {end:DateTime('UTC')}
    GROUP BY model_name, quantity
)
GROUP BY model_name
ORDER BY model_name
