-- segwatch: reads the roll-ups' maps of window: the champion in it is the baseline
-- Version comparison: each challenger (a version or stage other than the
-- champion, e.g. a shadow or canary model) is compared with the champion over
-- the same window: the champion's calls are the challenger's baseline. The
-- champion of a model is its {champion_stage} version with the most calls in the
-- window. Only quantities matching {quantities} are compared (outputs and
-- metrics: inputs differ by traffic split, not by model). `live` holds only the
-- current window here (baseline_name is set).
champions AS (
    SELECT model_name, argMax(model_version, calls) AS champion
    FROM live
    WHERE segment_dim = '__all__' AND model_stage = {champion_stage:String}
    GROUP BY model_name
),
challengers AS (
    SELECT DISTINCT l.model_name AS model_name, l.model_version AS model_version,
           l.model_stage AS model_stage, c.champion AS champion
    FROM live AS l
    INNER JOIN champions AS c USING (model_name)
    WHERE segment_dim = '__all__'
      AND NOT (l.model_stage = {champion_stage:String} AND l.model_version = c.champion)
),
windowed AS (
    SELECT l.*, concat('champion ', k.champion, ' (', {champion_stage:String}, ')') AS compared_with
    FROM live AS l
    INNER JOIN challengers AS k
        ON l.model_name = k.model_name AND l.model_version = k.model_version
       AND l.model_stage = k.model_stage
    WHERE match(l.quantity, {quantities:String})
    UNION ALL
    SELECT l.model_name, k.model_version, k.model_stage, l.segment_dim, l.segment_value, l.quantity,
           toUInt8(0) AS is_current, l.calls, l.sampled_calls, l.missing_calls, l.numeric_calls,
           l.total, l.hist, l.cats,
           concat('champion ', k.champion, ' (', {champion_stage:String}, ')') AS compared_with
    FROM live AS l
    INNER JOIN challengers AS k ON l.model_name = k.model_name AND l.model_version = k.champion
    WHERE l.model_stage = {champion_stage:String} AND match(l.quantity, {quantities:String})
),
