-- Calls per segment over time, for the report's volume plots: per {step} seconds
-- and segment, the model's calls in it (every quantity of a segment counts the
-- same calls; the largest count of a minute is taken, in case one lagged).
--
-- Parameters: model, start, end, step.
SELECT segment_dim, segment_value,
       toStartOfInterval(bucket_start, toIntervalSecond({step:UInt32}), 'UTC') AS t,
       sum(calls) AS calls
FROM (
    SELECT segment_dim, segment_value, bucket_start, max(quantity_calls) AS calls
    FROM (
        SELECT segment_dim, segment_value, bucket_start, quantity, sum(count) AS quantity_calls
        FROM ml_segment_aggregates
        WHERE model_name = {model:String}
          AND bucket_start >= {start:DateTime('UTC')} AND bucket_start < {end:DateTime('UTC')}
          -- (and its 5-minute slices, the sorting key's: the read skips to them; see
          -- segwatch.clickhouse.rollups.MINUTE_ROWS_BY_KEY)
          AND toStartOfFiveMinutes(bucket_start) >= toStartOfFiveMinutes({start:DateTime('UTC')})
          AND toStartOfFiveMinutes(bucket_start) < {end:DateTime('UTC')}
        GROUP BY segment_dim, segment_value, bucket_start, quantity
    )
    GROUP BY segment_dim, segment_value, bucket_start
)
GROUP BY segment_dim, segment_value, t
ORDER BY segment_dim, segment_value, t
