-- The windows of a trailing baseline: the current window and the window before it.
windowed AS (
    SELECT
        model_name, model_version, model_stage, segment_dim, segment_value, quantity,
        bucket_start >= {window_start:DateTime('UTC')} AS is_current,
        sum(count) AS calls,
        sum(sampled) AS sampled_calls,
        sum(missing) AS missing_calls,
        sum(numeric_count) AS numeric_calls,
        sum(sum) AS total,
        sumMap(histogram) AS hist,
        sumMap(categories) AS cats,
        groupUniqArrayArray(5)(exemplar_trace_ids) AS exemplars
    FROM ml_segment_aggregates
    WHERE bucket_start >= {baseline_start:DateTime('UTC')}
      AND bucket_start < {window_end:DateTime('UTC')}
      AND (bucket_start < {baseline_end:DateTime('UTC')} OR bucket_start >= {window_start:DateTime('UTC')})
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity, is_current
),
