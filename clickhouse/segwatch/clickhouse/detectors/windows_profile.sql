-- The baseline is the profile named baseline_name (loaded with `segwatch baseline`):
-- `live` holds only the current window then.
profile AS (
    -- With baseline_name set: a loaded profile (segwatch baseline) is the baseline,
    -- for every stage of the model and for its version (or every version). The
    -- live (model, version, stage) keys come from a scalar subquery, computed once.
    SELECT
        key.1 AS model_name, key.2 AS model_version, key.3 AS model_stage,
        b.segment_dim AS segment_dim, b.segment_value AS segment_value,
        b.quantity AS quantity,
        toUInt8(0) AS is_current,
        sum(b.count) AS calls,
        sum(b.sampled) AS sampled_calls,
        sum(b.missing) AS missing_calls,
        sum(b.numeric_count) AS numeric_calls,
        sum(b.sum) AS total,
        sumMap(b.histogram) AS hist,
        sumMap(b.categories) AS cats,
        CAST([], 'Array(String)') AS exemplars
    FROM ml_baseline_aggregates AS b
    ARRAY JOIN (
        SELECT groupArray((model_name, model_version, model_stage)) FROM (
            SELECT DISTINCT model_name, model_version, model_stage
            FROM ml_segment_rollup_5m FINAL
            WHERE segment_dim = '__all__'
              AND bucket_start >= {window_start:DateTime('UTC')}
              AND bucket_start < {window_end:DateTime('UTC')})
    ) AS key
    WHERE b.baseline_name = {baseline_name:String}
      AND b.model_name = key.1
      AND (b.model_version = '' OR b.model_version = key.2)
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
),
windowed AS (
    SELECT *, '' AS compared_with FROM live
    UNION ALL
    SELECT *, '' AS compared_with FROM profile
),
