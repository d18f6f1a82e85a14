-- segwatch: reads the roll-ups' maps of window: the profile is the baseline
-- The baseline is a loaded profile (segwatch baseline): `live` holds only the
-- current window then. Which profile each model is compared with:
--   {profiles}: one `model<TAB>profile<TAB>pinned<TAB>version` per line, from the
--     config's models.<m>.baseline and baselines.<name> (profile name; pinned 1: the
--     profile of that version for every live version);
--   every other model: the profile named {baseline_name} (`training`).
-- A live version reads the profile loaded for that version when there is one, else
-- the one loaded without a version (never both added together); a model whose
-- profile is not loaded is compared with nothing. The live keys and their chosen
-- (profile, profile version) come from one scalar subquery, computed once.
profile AS (
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
        -- what the sentence names: profile 'training' (version 2)
        any(concat('profile ', char(39), key.4, char(39),  -- char(39): a quote
                   if(key.5 = '', '', concat(' (version ', key.5, ')')))) AS compared_with
    FROM ml_baseline_aggregates AS b
    ARRAY JOIN (
        SELECT groupArray((model_name, model_version, model_stage, profile_name,
                           if(pinned, pinned_version,
                              if((model_name, profile_name, model_version) IN (
                                     SELECT DISTINCT model_name, baseline_name, model_version
                                     FROM ml_baseline_aggregates WHERE segment_dim = '__all__'),
                                 model_version, ''))))
        FROM (
            SELECT model_name, model_version, model_stage,
                   arrayFirst(c -> c[1] = model_name,
                              arrayFilter(c -> length(c) = 4,
                                          arrayMap(line -> splitByChar('\t', line),
                                                   splitByChar('\n', {profiles:String})))) AS choice,
                   if(empty(choice), {baseline_name:String}, choice[2]) AS profile_name,
                   NOT empty(choice) AND choice[3] = '1' AS pinned,
                   if(pinned, choice[4], '') AS pinned_version
            FROM (
                SELECT DISTINCT model_name, model_version, model_stage
                FROM ml_segment_rollup_5m FINAL
                WHERE segment_dim = '__all__'
                  AND bucket_start >= {window_start:DateTime('UTC')}
                  AND bucket_start < {window_end:DateTime('UTC')})
        )
    ) AS key
    WHERE b.baseline_name = key.4
      AND b.model_name = key.1
      AND b.model_version = key.5
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
),
windowed AS (
    SELECT *, '' AS compared_with FROM live
    UNION ALL
    SELECT * FROM profile
),
