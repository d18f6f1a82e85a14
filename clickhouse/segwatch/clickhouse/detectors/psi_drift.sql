-- psi_drift: Population Stability Index of every quantity in every segment,
-- the current window against a baseline window.
--
-- Bins: for numbers, the baseline deciles ({bins} bins) of the quantity over the
-- whole model, read from the mergeable log histograms, so every segment of a
-- quantity shares one set of bins; for text and booleans, one bin per value;
-- MISSING is a bin of its own, so a feature that stops arriving drifts too.
-- Proportions are smoothed (add 0.5 per bin) so an empty bin never divides by 0.
--
-- Noise control (first cut): both windows need {min_support} received calls; a segment is
-- reported only when the drift is specific to it: the rest of its dimension
-- (the whole model minus every flagged segment of that dimension) did not
-- shift (PSI at most {rest_threshold}); of the two views of one pair
-- of fields (segment by A, measure B / segment by B, measure A) only the
-- stronger is reported; the whole model (__all__) is reported only when no
-- specific segment explains the quantity's drift.
--
-- Baseline: the fragment the manifest puts at the windowed marker defines `windowed`:
-- windows_trailing.sql (the window before the current one) or
-- windows_profile.sql (the profile named baseline_name).
--
-- Parameters: detector, window_start, window_end, baseline_start, baseline_end,
-- threshold, rest_threshold, min_support, bins, baseline_name.
-- Output: the detector contract (see manifest.yaml).
WITH
    (b, c) -> arraySum(arrayMap(
        (x, y) -> (((y + 0.5) / (arraySum(c) + 0.5 * length(c))) - ((x + 0.5) / (arraySum(b) + 0.5 * length(b))))
                  * log(((y + 0.5) / (arraySum(c) + 0.5 * length(c))) / ((x + 0.5) / (arraySum(b) + 0.5 * length(b)))),
        b, c)) AS psi,
live AS (
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
    -- The trailing baseline's rows too, unless a profile is the baseline.
    WHERE bucket_start >= if({baseline_name:String} = '', {baseline_start:DateTime('UTC')},
                             {window_start:DateTime('UTC')})
      AND bucket_start < {window_end:DateTime('UTC')}
      AND (bucket_start < {baseline_end:DateTime('UTC')} OR bucket_start >= {window_start:DateTime('UTC')})
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity, is_current
),
/*@windowed*/
edges AS (
    -- Decile edges (histogram keys) of each quantity's baseline over the whole model.
    SELECT
        model_name, model_version, model_stage, quantity,
        mapKeys(hist) AS keys,
        arrayCumSum(mapValues(hist)) AS cumulative,
        arrayDistinct(arrayMap(
            q -> keys[arrayFirstIndex(s -> s >= q * arraySum(mapValues(hist)), cumulative)],
            arrayMap(i -> i / {bins:UInt32}, range(1, {bins:UInt32})))) AS decile_keys
    FROM windowed
    WHERE segment_dim = '__all__' AND NOT is_current AND length(mapKeys(hist)) > 0
),
binned AS (
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity, is_current,
           concat('h', toString(arrayCount(e -> e < kc.1, decile_keys))) AS bin, kc.2 AS n
    FROM (
        SELECT w.*, e.decile_keys
        FROM windowed AS w
        LEFT JOIN edges AS e USING (model_name, model_version, model_stage, quantity)
    )
    ARRAY JOIN arrayZip(mapKeys(hist), mapValues(hist)) AS kc
    UNION ALL
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity, is_current,
           concat('c:', kc.1) AS bin, kc.2 AS n
    FROM windowed
    ARRAY JOIN arrayZip(mapKeys(cats), mapValues(cats)) AS kc
    UNION ALL
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity, is_current,
           'missing' AS bin, missing_calls AS n
    FROM windowed
    WHERE missing_calls > 0
),
per_bin AS (
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity, bin,
           sumIf(n, NOT is_current) AS b, sumIf(n, is_current) AS c
    FROM binned
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity, bin
),
quantity_bins AS (
    -- Every bin of a quantity, with its whole-model counts: segments are aligned to these.
    SELECT model_name, model_version, model_stage, quantity,
           groupArray(bin) AS bins, groupArray(b) AS all_b, groupArray(c) AS all_c
    FROM per_bin
    WHERE segment_dim = '__all__'
    GROUP BY model_name, model_version, model_stage, quantity
),
aligned AS (
    SELECT s.model_name AS model_name, s.model_version AS model_version, s.model_stage AS model_stage,
           s.segment_dim AS segment_dim, s.segment_value AS segment_value, s.quantity AS quantity,
           arrayMap(x -> s.seg_b[x], q.bins) AS b,
           arrayMap(x -> s.seg_c[x], q.bins) AS c
    FROM (
        SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
               mapFromArrays(groupArray(bin), groupArray(b)) AS seg_b,
               mapFromArrays(groupArray(bin), groupArray(c)) AS seg_c
        FROM per_bin
        GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
    ) AS s
    INNER JOIN quantity_bins AS q USING (model_name, model_version, model_stage, quantity)
),
observed AS (
    -- Support is what was received, not the weighted estimate: sampling does not add evidence.
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
           sumIf(sampled_calls, is_current) AS support,
           sumIf(sampled_calls, NOT is_current) AS baseline_support
    FROM windowed
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
),
flagged AS (
    SELECT a.model_name AS model_name, a.model_version AS model_version,
           a.model_stage AS model_stage, a.segment_dim AS segment_dim,
           a.segment_value AS segment_value, a.quantity AS quantity, a.b AS b, a.c AS c,
           psi(a.b, a.c) AS score, o.support AS support, o.baseline_support AS baseline_support
    FROM aligned AS a
    INNER JOIN observed AS o
        USING (model_name, model_version, model_stage, segment_dim, segment_value, quantity)
    WHERE score > {threshold:Float64}
      AND support >= {min_support:UInt64}
      AND baseline_support >= {min_support:UInt64}
),
dimension_rest AS (
    -- Per dimension and quantity: everything outside the flagged segments.
    SELECT f.model_name AS model_name, f.model_version AS model_version,
           f.model_stage AS model_stage, f.segment_dim AS segment_dim, f.quantity AS quantity,
           arrayMap((a, x) -> a - x, any(q.all_b), sumForEach(f.b)) AS rest_b,
           arrayMap((a, x) -> a - x, any(q.all_c), sumForEach(f.c)) AS rest_c,
           if(arraySum(rest_b) < {min_support:UInt64} OR arraySum(rest_c) < {min_support:UInt64},
              inf, psi(rest_b, rest_c)) AS rest_score
    FROM flagged AS f
    INNER JOIN quantity_bins AS q USING (model_name, model_version, model_stage, quantity)
    WHERE f.segment_dim != '__all__'
    GROUP BY f.model_name, f.model_version, f.model_stage, f.segment_dim, f.quantity
),
candidates AS (
    -- The drift is specific to the flagged segments when the rest of their
    -- dimension did not move (PSI at most rest_threshold; 0.1 = "no shift").
    SELECT f.*, r.rest_score AS rest_score
    FROM flagged AS f
    INNER JOIN dimension_rest AS r
        USING (model_name, model_version, model_stage, segment_dim, quantity)
    WHERE r.rest_score <= {rest_threshold:Float64}
),
specific AS (
    -- (country=BR, feature.amount) and (amount=[100, 1000), feature.country) are
    -- one change of the pair (country, amount) seen from both sides: keep the
    -- side that scores higher.
    SELECT c.*
    FROM candidates AS c
    LEFT JOIN (
        SELECT model_name, model_version, model_stage, segment_dim, quantity,
               max(score) AS mirror_score
        FROM candidates
        GROUP BY model_name, model_version, model_stage, segment_dim, quantity
    ) AS m
        ON m.model_name = c.model_name AND m.model_version = c.model_version
       AND m.model_stage = c.model_stage
       AND m.segment_dim = c.quantity AND m.quantity = c.segment_dim
    WHERE m.mirror_score < c.score
),
reported AS (
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
           score, support, baseline_support, rest_score
    FROM specific
    UNION ALL
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
           score, support, baseline_support, nan AS rest_score
    FROM flagged
    WHERE segment_dim = '__all__'
      AND (model_name, model_version, model_stage, quantity) NOT IN (
          SELECT model_name, model_version, model_stage, quantity FROM specific)
)
SELECT
    {detector:String} AS detector,
    r.model_name AS model_name, r.model_version AS model_version, r.model_stage AS model_stage,
    r.segment_dim AS segment_dim, r.segment_value AS segment_value, r.quantity AS quantity,
    {window_start:DateTime('UTC')} AS window_start,
    {window_end:DateTime('UTC')} AS window_end,
    {baseline_start:DateTime('UTC')} AS baseline_start,
    {baseline_end:DateTime('UTC')} AS baseline_end,
    r.score AS score,
    {threshold:Float64} AS threshold,
    CAST(NULL AS Nullable(Float64)) AS p_value,
    r.support AS support,
    r.baseline_support AS baseline_support,
    if(base.numeric_calls > 0, base.total / base.numeric_calls, nan) AS baseline_value,
    if(cur.numeric_calls > 0, cur.total / cur.numeric_calls, nan) AS current_value,
    cur.exemplars AS exemplar_trace_ids,
    concat(
        r.quantity, ' drifted for ',
        if(r.segment_dim = '__all__', 'the whole model', concat(r.segment_dim, '=', r.segment_value)),
        ': PSI ', toString(round(r.score, 3)), ' > ', toString({threshold:Float64}),
        if({baseline_name:String} = '',
           concat(' against the baseline ', toString({baseline_start:DateTime('UTC')}), ' to ',
                  toString({baseline_end:DateTime('UTC')}), ' UTC'),
           concat(' against the ', {baseline_name:String}, ' profile')),
        if(base.numeric_calls > 0 AND cur.numeric_calls > 0,
           concat('; mean ', toString(round(base.total / base.numeric_calls, 3)), ' -> ',
                  toString(round(cur.total / cur.numeric_calls, 3))),
           ''),
        '; ', toString(r.support), ' calls in the window',
        if(r.segment_dim = '__all__', '',
           concat('; the rest of ', r.segment_dim, ' did not shift (PSI ',
                  toString(round(r.rest_score, 3)), ')'))
    ) AS details
FROM reported AS r
INNER JOIN windowed AS cur
    ON cur.model_name = r.model_name AND cur.model_version = r.model_version
   AND cur.model_stage = r.model_stage AND cur.segment_dim = r.segment_dim
   AND cur.segment_value = r.segment_value AND cur.quantity = r.quantity AND cur.is_current
INNER JOIN windowed AS base
    ON base.model_name = r.model_name AND base.model_version = r.model_version
   AND base.model_stage = r.model_stage AND base.segment_dim = r.segment_dim
   AND base.segment_value = r.segment_value AND base.quantity = r.quantity AND NOT base.is_current
ORDER BY r.score DESC
