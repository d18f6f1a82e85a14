-- data_quality: a feature pipeline breaks for one segment. One pass, three checks,
-- each reported as a detector of its own (data_<check>: its own anomalies,
-- lifecycle and false-discovery control):
--   * missing:    the share of calls where the quantity is MISSING jumped
--                 (one-sided, exact: given the missing calls of both windows,
--                 how surprising that so many fell in the window; a
--                 two-proportion z test, used before, read too many small
--                 p-values when few calls go missing: a count is skewed);
--   * range:      numbers outside the range the whole model showed in the
--                 baseline (beyond {range_tolerance} of it, relative: the
--                 histograms hold values within the store's accuracy);
--   * categories: values the whole model never showed in the baseline.
-- For range and categories the p-value asks how surprising that many calls are
-- when a value falls out of range with probability 2 / (n + 1) after n baseline
-- values, or is unseen with the Good-Turing mass (seen-once values + 1) / (n + 1)
-- (a Poisson tail).
-- Score: the bad share in the window minus the baseline's (for missing), the bad
-- share (otherwise). Noise control: {min_support} calls in both windows, the
-- score above {<check>_threshold}, Benjamini-Hochberg at {fdr} per check; a
-- segment is reported only when the rest of its dimension scores at most
-- {<check>_rest_threshold} (see `reported`), the whole model only when no
-- segment explains it.
--
-- Output: the detector contract (see manifest.yaml).
-- segwatch: reads the roll-ups' maps of window (and the whole model's baseline categories,
-- which every roll-up keeps: see segwatch.clickhouse.rollups)
WITH
/*@statistics*/
assumeNotNull((SELECT (1 + a) / (1 - a) FROM (
    SELECT toFloat64OrDefault(argMax(value, set_at), 0.01) AS a
    FROM ml_store_settings WHERE name = 'histogram_accuracy'))) AS histogram_gamma,
/*@rolled_up*/
paired AS (
    -- One group per segment and quantity, both periods side by side (-If combinators):
    -- only the window's values are checked against the whole model's baseline range
    -- (min, max) and categories, so the window's histogram and categories, the whole
    -- model's baseline categories and the window's exemplars are all the maps read.
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
           sumIf(sampled, is_current) AS support,
           sumIf(sampled, NOT is_current) AS baseline_support,
           sumIf(count, is_current) AS calls_c, sumIf(count, NOT is_current) AS calls_b,
           sumIf(missing, is_current) AS missing_c, sumIf(missing, NOT is_current) AS missing_b,
           sumIf(numeric_count, is_current) AS numeric_c, sumIf(numeric_count, NOT is_current) AS numeric_b,
           minIf(min, NOT is_current) AS low_b, maxIf(max, NOT is_current) AS high_b,
           sumMapIf(histogram, is_current AND sw_maps_read(maps)) AS hist_c,
           sumMapIf(categories, is_current AND sw_maps_read(maps)) AS cats_c,
           sumMapIf(categories, NOT is_current AND segment_dim = '__all__' AND sw_maps_read(maps)) AS cats_b,
           -- five distinct exemplars (see psi_drift.sql)
           arraySlice(arrayDistinct(groupArrayArrayIf(60)(exemplar_trace_ids, is_current)), 1, 5) AS exemplars
    FROM (
        SELECT *, bucket_start >= {window_start:DateTime('UTC')} AS is_current
        FROM rolled_up
        WHERE bucket_start >= {baseline_start:DateTime('UTC')}
          AND bucket_start < {window_end:DateTime('UTC')}
          AND (bucket_start < {baseline_end:DateTime('UTC')} OR bucket_start >= {window_start:DateTime('UTC')})
    )
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
),
measured AS (
    -- bad_c / total_c: the bad share in the window; bad_b / total_b: in the baseline
    -- (0 for range and categories: the baseline defines what is good); p_null: the
    -- chance of one bad call when nothing changed (range and categories).
    SELECT *, check,
           multiIf(check = 'missing', missing_c,
                   check = 'range',
                   arraySum(arrayMap((k, v) -> if(
                       sw_key_value(k, histogram_gamma) < model_low - abs(model_low) * {range_tolerance:Float64}
                       OR sw_key_value(k, histogram_gamma) > model_high + abs(model_high) * {range_tolerance:Float64},
                       v, 0), mapKeys(hist_c), mapValues(hist_c))),
                   arraySum(arrayMap((k, v) -> if(has(model_categories, k), 0, v),
                                     mapKeys(cats_c), mapValues(cats_c)))) AS bad_c,
           multiIf(check = 'missing', calls_c, check = 'range', numeric_c,
                   calls_c - missing_c - numeric_c) AS total_c,
           if(check = 'missing', missing_b, 0) AS bad_b,
           multiIf(check = 'missing', calls_b, check = 'range', numeric_b,
                   calls_b - missing_b - numeric_b) AS total_b,
           if(check = 'range', 2 / (model_baseline_support + 1),
              (model_seen_once + 1) / (model_baseline_support + 1)) AS p_null
    FROM (
        SELECT *,
               anyIf(low_b, segment_dim = '__all__') OVER model_quantity AS model_low,
               anyIf(high_b, segment_dim = '__all__') OVER model_quantity AS model_high,
               anyIf(mapKeys(cats_b), segment_dim = '__all__') OVER model_quantity AS model_categories,
               anyIf(arrayCount(v -> v <= 1, mapValues(cats_b)), segment_dim = '__all__')
                   OVER model_quantity AS model_seen_once,
               anyIf(baseline_support, segment_dim = '__all__') OVER model_quantity AS model_baseline_support
        FROM paired
        WINDOW model_quantity AS (PARTITION BY model_name, model_version, model_stage, quantity)
    )
    ARRAY JOIN ['missing', 'range', 'categories'] AS check
    WHERE support >= {min_support:UInt64} AND baseline_support >= {min_support:UInt64}
      AND (check != 'range' OR (numeric_c > 0 AND numeric_b > 0 AND isFinite(model_low)))
      AND (check != 'categories' OR length(model_categories) > 0)
),
tested AS (
    SELECT *,
           concat('data_', check) AS fdr_family,
           multiIf(check = 'missing', {missing_threshold:Float64}, check = 'range', {range_threshold:Float64},
                   {categories_threshold:Float64}) AS threshold,
           share_c - share_b AS score,
           -- (1 when the score cannot be reported: see fdr.sql)
           if(score <= threshold, 1.0, if(check = 'missing',
              -- P(X >= missing in the window) for X ~ Binomial(missing in both windows, the
              -- window's share of the calls received), the conditional test of equal rates:
              -- I_share(k, n - k + 1), n - k the baseline's (calls received: weights add no evidence)
              if(bad_received < 1, 1.0,
                 sw_beta_inc(bad_received, baseline_bad_received + 1, support / (support + baseline_support))),
              -- P(at least this many bad calls) for a Poisson count of mean support * p_null
              if(bad_received < 1, 1.0, 1 - sw_gamma_q(bad_received, support * p_null)))) AS p_value
    FROM (
        SELECT *,
               if(total_c > 0, bad_c / total_c, 0) AS share_c,
               if(total_b > 0, bad_b / total_b, 0) AS share_b,
               round(bad_c / greatest(calls_c, 1e-300) * support) AS bad_received,
               round(bad_b / greatest(calls_b, 1e-300) * baseline_support) AS baseline_bad_received,
               -- the two references for the rest of the dimension (see `reported`)
               anyIf(bad_c, segment_dim = '__all__') OVER model_quantity AS model_bad_c,
               anyIf(total_c, segment_dim = '__all__') OVER model_quantity AS model_total_c,
               anyIf(bad_b, segment_dim = '__all__') OVER model_quantity AS model_bad_b,
               anyIf(total_b, segment_dim = '__all__') OVER model_quantity AS model_total_b,
               sum(bad_c) OVER dimension AS dimension_bad_c,
               sum(total_c) OVER dimension AS dimension_total_c,
               sum(bad_b) OVER dimension AS dimension_bad_b,
               sum(total_b) OVER dimension AS dimension_total_b
        FROM measured
        WHERE total_c > 0
        WINDOW dimension AS (PARTITION BY model_name, model_version, model_stage, segment_dim, quantity, check),
               model_quantity AS (PARTITION BY model_name, model_version, model_stage, quantity, check)
    )
),
/*@fdr*/
reported AS (
    SELECT *
    FROM (
        SELECT *,
               countIf(is_specific) OVER (PARTITION BY model_name, model_version, model_stage, quantity, check)
                   AS explaining_segments
        FROM (
            SELECT *,
                   segment_dim != '__all__'
                   AND rest_score <= multiIf(check = 'missing', {missing_rest_threshold:Float64},
                                             check = 'range', {range_rest_threshold:Float64},
                                             {categories_rest_threshold:Float64}) AS is_specific
            FROM (
                SELECT *,
                       -- the larger of the two views; a rest too thin to judge localizes
                       -- nothing, nor does one left with less than half of the model's calls
                       -- (flagged segments holding most calls: the change is the model's)
                       greatest(
                           if(rest_total_c < greatest(toFloat64({min_support:UInt64}), model_total_c / 2)
                              OR rest_total_b < {min_support:UInt64}, inf,
                              rest_bad_c / rest_total_c - rest_bad_b / rest_total_b),
                           if(tested_rest_total_c < {min_support:UInt64}
                              OR tested_rest_total_b < {min_support:UInt64}, inf,
                              tested_rest_bad_c / tested_rest_total_c - tested_rest_bad_b / tested_rest_total_b))
                           AS rest_score
                FROM (
                    SELECT *,
                           -- The rest of the dimension, two views: the whole model minus every
                           -- flagged segment of the dimension, and its tested segments minus
                           -- the flagged ones (a segment without a baseline, e.g. a new value,
                           -- is then no reference).
                           model_bad_c - sum(bad_c) OVER dimension AS rest_bad_c,
                           model_total_c - sum(total_c) OVER dimension AS rest_total_c,
                           model_bad_b - sum(bad_b) OVER dimension AS rest_bad_b,
                           model_total_b - sum(total_b) OVER dimension AS rest_total_b,
                           dimension_bad_c - sum(bad_c) OVER dimension AS tested_rest_bad_c,
                           dimension_total_c - sum(total_c) OVER dimension AS tested_rest_total_c,
                           dimension_bad_b - sum(bad_b) OVER dimension AS tested_rest_bad_b,
                           dimension_total_b - sum(total_b) OVER dimension AS tested_rest_total_b
                    FROM significant
                    WHERE score > threshold
                    WINDOW dimension AS (PARTITION BY model_name, model_version, model_stage, segment_dim, quantity, check)
                )
            )
        )
    )
    WHERE is_specific OR (segment_dim = '__all__' AND explaining_segments = 0)
)
SELECT
    fdr_family AS detector,
    model_name, model_version, model_stage, segment_dim, segment_value, quantity,
    {window_start:DateTime('UTC')} AS window_start,
    {window_end:DateTime('UTC')} AS window_end,
    {baseline_start:DateTime('UTC')} AS baseline_start,
    {baseline_end:DateTime('UTC')} AS baseline_end,
    score,
    threshold,
    p_value,
    support,
    baseline_support,
    share_b AS baseline_value,
    share_c AS current_value,
    exemplars AS exemplar_trace_ids,
    concat(
        multiIf(check = 'missing', concat(quantity, ' went missing more often for '),
                check = 'range', concat(quantity, ' left its usual range for '),
                concat(quantity, ' took values never seen before for ')),
        if(segment_dim = '__all__', 'the whole model', concat(segment_dim, '=', segment_value)), ': ',
        multiIf(check = 'missing',
                concat('missing ', toString(round(100 * share_b, 1)), ' % → ',
                       toString(round(100 * share_c, 1)), ' % of calls (baseline → window)'),
                check = 'range',
                concat(toString(round(100 * share_c, 2)), ' % of values outside [',
                       toString(round(model_low, 4)), ', ', toString(round(model_high, 4)),
                       '], the whole model''s baseline range'),
                concat(toString(round(100 * share_c, 2)), ' % of calls with a value the baseline never had',
                       if(length(arrayFilter(k -> NOT has(model_categories, k), mapKeys(cats_c))) > 0,
                          concat(' (e.g. ', arrayStringConcat(arraySlice(arrayFilter(
                              k -> NOT has(model_categories, k), mapKeys(cats_c)), 1, 3), ', '), ')'),
                          ''))),
        -- the test behind the p: the exact one-sided binomial test of the missing calls,
        -- or a Poisson tail of the bad calls
        if(check = 'missing', ' (one-sided binomial test p ', ' (Poisson p '),
        if(p_value < 1e-6, '< 1e-6)', concat('= ', toString(round(p_value, 6)), ')')),
        '; ', toString(support), ' calls in the window',
        if(segment_dim = '__all__', '',
           concat('; the rest of ', segment_dim, ' scored ', toString(round(rest_score, 4))))
    ) AS details,
    map('share', share_c, 'baseline_share', share_b, 'bad_calls', bad_received,
        'fdr_tests', toFloat64(fdr_tests),
        'rest_score', if(segment_dim = '__all__', nan, rest_score)) AS statistics
FROM reported
ORDER BY score DESC
