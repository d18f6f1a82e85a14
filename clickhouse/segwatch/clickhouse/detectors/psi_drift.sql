-- psi_drift: distribution drift of every quantity in every segment, the current
-- window against a baseline (the trailing window, or a loaded profile).
--
-- Statistics (all from the stored histograms, none from raw calls):
--   * PSI, the score, and Jensen-Shannon distance on coarse bins: for numbers the
--     baseline deciles ({bins} bins) of the quantity over the whole model, read from
--     the mergeable log histograms, so every segment of a quantity shares one set
--     of bins; for text and booleans one bin per value; MISSING is a bin of its own,
--     so a feature that stops arriving drifts too;
--   * a chi-square test of homogeneity on those bins (the categories' test);
--   * for numbers, Kolmogorov-Smirnov (D and its asymptotic p-value) and
--     Wasserstein-1 on the fine histogram buckets (within the store's relative
--     accuracy of the values).
-- p_value: the chi-square p-value; for numbers, the smaller of the KS and
-- chi-square p-values, doubled (Bonferroni), so either test can find the change.
--
-- Noise control: both windows need {min_support} received calls; a segment is
-- flagged only when PSI exceeds {threshold} AND the test survives
-- Benjamini-Hochberg at false-discovery rate {fdr} over every segment and
-- quantity tested in the run; it is reported only when the drift is specific
-- to it: the rest of its dimension did not shift (PSI at most {rest_threshold}; see
-- `reported`); of the two
-- views of one pair of fields (segment by A, measure B / segment by B, measure
-- A) only the stronger is reported; the whole model (__all__) is reported only
-- when no specific segment explains the quantity's drift.
--
-- Baseline: the fragment the manifest puts at the windowed marker defines `windowed`:
-- windows_trailing.sql (the window before the current one) or
-- windows_profile.sql (the profile named baseline_name), or windows_versions.sql
-- (each challenger version against the champion, in the same window).
--
-- Parameters: detector, window_start, window_end, baseline_start, baseline_end,
-- threshold, rest_threshold, min_support, bins, fdr, baseline_name.
-- Output: the detector contract (see manifest.yaml).
WITH
/*@statistics*/
-- The store's histogram accuracy (ml_store_settings; 1 % before any was recorded).
assumeNotNull((SELECT (1 + a) / (1 - a) FROM (
    SELECT toFloat64OrDefault(argMax(value, set_at), 0.01) AS a
    FROM ml_store_settings WHERE name = 'histogram_accuracy'))) AS histogram_gamma,
-- p-values of the chi-square (bins) and Kolmogorov-Smirnov (t = D sqrt(n m / (n + m)))
-- tests; BH at fdr <= 0.5 never rejects p > 0.5, so below the median they read 1
-- (chi-square: x below dof - 1; Kolmogorov: t < 0.82).
(x, bins) -> if(x < bins - 2, 1.0, sw_chi2_sf(x, bins - 1)) AS sw_chi2_p,
(t) -> if(t < 0.82, 1.0, sw_kolmogorov_sf(t)) AS sw_ks_p,
-- a p-value in a sentence (1 stands for "not computed": its statistic was below its median)
(p) -> multiIf(p < 1e-6, '< 1e-6', p >= 1, '> 0.5', concat('= ', toString(round(p, 6)))) AS sw_p_text,
/*@rolled_up*/
live AS (
    SELECT
        model_name, model_version, model_stage, segment_dim, segment_value, quantity,
        bucket_start >= {window_start:DateTime('UTC')} AS is_current,
        sum(count) AS calls,
        sum(sampled) AS sampled_calls,
        sum(missing) AS missing_calls,
        sum(numeric_count) AS numeric_calls,
        sum(sum) AS total,
        sumMapIf(histogram, sw_maps_read(maps)) AS hist,
        sumMapIf(categories, sw_maps_read(maps)) AS cats
    FROM rolled_up
    -- The trailing baseline's rows too, unless a profile is the baseline.
    WHERE bucket_start >= if({baseline_name:String} = '', {baseline_start:DateTime('UTC')},
                             {window_start:DateTime('UTC')})
      AND bucket_start < {window_end:DateTime('UTC')}
      AND (bucket_start < {baseline_end:DateTime('UTC')} OR bucket_start >= {window_start:DateTime('UTC')})
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity, is_current
),
/*@windowed*/
segments AS (
    -- One row per segment and quantity: its bins in both windows, aligned to the
    -- quantity's bins over the whole model, and what the statistics need.
    --   Bins (the statistics fragment's sw_decile_keys, sw_key_bins, sw_bin_counts,
    --   sw_bins_kept: the report's heat map, report/drift_grid.sql, bins with them
    --   and takes its edges, names and kept bins from the same rows): for numbers,
    --   the whole model's baseline deciles (histogram keys); then one bin per text
    --   or boolean value the whole model showed in either window; then MISSING.
    --   Bins empty in the whole model in both windows are dropped.
    SELECT *,
           sw_bins_kept(b_all_bins, keep) AS b,
           sw_bins_kept(c_all_bins, keep) AS c
    FROM (
        SELECT *,
               anyIf(sw_bins_in_use(b_all_bins, c_all_bins), segment_dim = '__all__')
                   OVER model_quantity AS keep
        FROM (
            SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
                   -- a window's row (at most one): groupArrayIf(...)[1], not anyIf, which holds
                   -- its value as a generic Field (the maps' tuples: 0.4 CPU-s of a 2 CPU-s run)
                   groupArrayIf(counts, NOT is_current)[1] AS b_counts,
                   groupArrayIf(counts, is_current)[1] AS c_counts,
                   -- a window without calls has no row: zeros
                   sw_bins_or_zeros(b_counts, c_counts) AS b_all_bins,
                   sw_bins_or_zeros(c_counts, b_counts) AS c_all_bins,
                   -- Support is what was received, not the weighted estimate: sampling does not
                   -- add evidence. Numeric support likewise (the share of calls with a number).
                   sumIf(sampled_calls, is_current) AS support,
                   sumIf(sampled_calls, NOT is_current) AS baseline_support,
                   sumIf(sampled_calls * numeric_calls / greatest(calls, 1e-300), is_current) AS numeric_support,
                   sumIf(sampled_calls * numeric_calls / greatest(calls, 1e-300), NOT is_current)
                       AS baseline_numeric_support,
                   groupArrayIf(hist, NOT is_current)[1] AS hist_b,
                   groupArrayIf(hist, is_current)[1] AS hist_c,
                   if(sumIf(numeric_calls, NOT is_current) > 0,
                      sumIf(total, NOT is_current) / sumIf(numeric_calls, NOT is_current), nan) AS baseline_mean,
                   if(sumIf(numeric_calls, is_current) > 0,
                      sumIf(total, is_current) / sumIf(numeric_calls, is_current), nan) AS current_mean,
                   -- the MISSING share in each window (what the sentence says first when it moved)
                   if(sumIf(calls, NOT is_current) > 0,
                      sumIf(missing_calls, NOT is_current) / sumIf(calls, NOT is_current), nan)
                       AS baseline_missing_share,
                   if(sumIf(calls, is_current) > 0,
                      sumIf(missing_calls, is_current) / sumIf(calls, is_current), nan) AS missing_share,
                   max(compared_with) AS compared_with  -- over rows without one: ''
            FROM (
                SELECT *,
                       sw_bin_counts(hist, key_bins, decile_keys, cats, category_names, missing_calls)
                           AS counts
                FROM (
                -- each fine bucket's bin (its own step: see `fine` on aliases used twice)
                SELECT *, sw_key_bins(hist, decile_keys) AS key_bins
                FROM (
                    SELECT *,
                           anyIf(baseline_deciles, segment_dim = '__all__' AND NOT is_current
                                 AND length(mapKeys(hist)) > 0) OVER model_quantity AS decile_keys,
                           arraySort(arrayDistinct(arrayFlatten(
                               groupArrayIf(mapKeys(cats), segment_dim = '__all__') OVER model_quantity)))
                               AS category_names
                    FROM (
                        SELECT *,
                               -- (only the whole model's baseline needs its deciles)
                               if(segment_dim = '__all__' AND NOT is_current,
                                  sw_decile_keys(hist, {bins:UInt32}), []) AS baseline_deciles
                        FROM windowed
                    )
                    WINDOW model_quantity AS (PARTITION BY model_name, model_version, model_stage, quantity)
                )
                )
            )
            GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
        )
        WINDOW model_quantity AS (PARTITION BY model_name, model_version, model_stage, quantity)
    )
),
scored AS (
    -- Each test's PSI (the score) beside the whole model's bins (a reference for the
    -- rest of the dimension, see `reported`), for the segments with support in both
    -- windows. Only a test scoring above the threshold can be reported (see
    -- `tested`): `flagged`; the other statistics are computed for those alone.
    SELECT *, sw_psi(b, c) AS score, score > {threshold:Float64} AS flagged
    FROM (
        SELECT *,
               anyIf(b, segment_dim = '__all__') OVER model_quantity AS all_b,
               anyIf(c, segment_dim = '__all__') OVER model_quantity AS all_c
        FROM segments
        WINDOW model_quantity AS (PARTITION BY model_name, model_version, model_stage, quantity)
    )
    WHERE support >= {min_support:UInt64} AND baseline_support >= {min_support:UInt64}
),
fine AS (
    -- Both windows' fine buckets in key order (key order is value order), as
    -- (key, baseline, current) entries; a key in both windows appears twice and
    -- only its last entry ends the key's step of the two CDFs. Flagged tests only:
    -- the others' entries are empty, and so cost nothing below. (Each step is a
    -- subquery of its own: an alias used twice is expanded twice, and the
    -- statistics' lambdas would otherwise grow the query tree past its limit.)
    SELECT * EXCEPT (keys, cdf_b, cdf_c, cdf_gaps),
           if(numeric, arrayMax(arrayMap((gap, i) -> if(i = length(keys) OR keys[i + 1] != keys[i], gap, 0),
                                         cdf_gaps, arrayEnumerate(keys))), nan) AS ks,
           if(numeric, arraySum(arrayMap((gap, i) -> if(i < length(keys),
                                                        gap * (sw_key_value(keys[i + 1], histogram_gamma)
                                                               - sw_key_value(keys[i], histogram_gamma)), 0),
                                         cdf_gaps, arrayEnumerate(keys))), nan) AS wasserstein
    FROM (
        SELECT *, arrayMap((x, y) -> abs(x / cdf_b[-1] - y / cdf_c[-1]), cdf_b, cdf_c) AS cdf_gaps
        FROM (
            SELECT * EXCEPT (entries),
                   arrayMap(e -> e.1, entries) AS keys,
                   arrayCumSum(arrayMap(e -> e.2, entries)) AS cdf_b,
                   arrayCumSum(arrayMap(e -> e.3, entries)) AS cdf_c
            FROM (
                SELECT * EXCEPT (fine_b, fine_c),
                       arraySort(e -> e.1, arrayConcat(
                           arrayMap((k, v) -> (k, v, 0.), mapKeys(fine_b), mapValues(fine_b)),
                           arrayMap((k, v) -> (k, 0., v), mapKeys(fine_c), mapValues(fine_c))))
                           AS entries
                FROM (
                    -- the fine buckets of a flagged test (empty for the others)
                    SELECT * EXCEPT (hist_b, hist_c),
                           if(flagged, hist_b, map()) AS fine_b,
                           if(flagged, hist_c, map()) AS fine_c,
                           length(mapKeys(hist_b)) > 0 AND length(mapKeys(hist_c)) > 0 AS numeric
                    FROM scored
                )
            )
        )
    )
),
tested AS (
    -- Beside each test, the bins of every tested segment of its dimension (the other
    -- reference for the rest of the dimension, see `reported`).
    -- p-values only where they can matter: 1 for a test scoring at most the
    -- threshold (see fdr.sql), so the costly tails are computed for the few
    -- tests that can be reported; so are JS, chi-square and KS (from the flagged
    -- bins: empty for the others).
    SELECT *, {detector:String} AS fdr_family,
           if(numeric, least(1.0, 2 * least(ks_p, chi2_p)), chi2_p) AS p_value,
           sumForEach(b) OVER dimension AS dimension_b,
           sumForEach(c) OVER dimension AS dimension_c
    FROM (
        SELECT *,
               if(flagged, sw_chi2_p(chi2, kept_bins), 1.0) AS chi2_p,
               if(numeric, if(flagged, sw_ks_p(ks_t), 1.0), nan) AS ks_p
        FROM (
            SELECT *, sw_chi2_of(kept_b, kept_c) AS chi2, length(kept_b) AS kept_bins
            FROM (
                SELECT *,
                       sw_js(flagged_b, flagged_c) AS js,
                       sw_kept_b(flagged_b, flagged_c, baseline_support, support) AS kept_b,
                       sw_kept_c(flagged_b, flagged_c, baseline_support, support) AS kept_c,
                       ks * sqrt(baseline_numeric_support * numeric_support
                                 / (baseline_numeric_support + numeric_support)) AS ks_t
                FROM (SELECT *, if(flagged, b, []) AS flagged_b, if(flagged, c, []) AS flagged_c FROM fine)
            )
        )
    )
    WINDOW dimension AS (PARTITION BY model_name, model_version, model_stage, segment_dim, quantity)
),
/*@fdr*/
reported AS (
    -- Which flagged tests to report, in window functions over one pass (a CTE
    -- read twice is computed twice):
    --   rest_score: PSI of the rest of the segment's dimension, for that quantity,
    --     the larger of two views: the whole model minus every flagged segment of
    --     the dimension, and its tested segments minus the flagged ones (a
    --     segment without a baseline, e.g. a new value, is then no reference);
    --     rests too thin to judge score inf, and so does a rest left with less
    --     than half of the model's calls (most calls moved: the model drifted,
    --     not the segments). The drift is specific to the flagged segments
    --     when the rest did not move (at most rest_threshold; 0.1 = "no shift");
    --   mirror_score: (country=BR, feature.amount) and (amount=[100, 1000),
    --     feature.country) are one change of the pair (country, amount) seen from
    --     both sides: only the side that scores higher is reported;
    --   the whole model (__all__) is reported only when no specific segment
    --     explains the quantity's drift.
    SELECT *
    FROM (
        SELECT *,
               countIf(is_specific) OVER (PARTITION BY model_name, model_version, model_stage, quantity)
                   AS explaining_segments
        FROM (
            SELECT *,
                   segment_dim != '__all__' AND rest_score <= {rest_threshold:Float64}
                   AND if(segment_dim < quantity, mirror_hi, mirror_lo) < score AS is_specific
            FROM (
                SELECT *,
                       maxIf(score, segment_dim < quantity AND segment_dim != '__all__'
                                    AND rest_score <= {rest_threshold:Float64}) OVER pair AS mirror_lo,
                       maxIf(score, segment_dim > quantity AND segment_dim != '__all__'
                                    AND rest_score <= {rest_threshold:Float64}) OVER pair AS mirror_hi
                FROM (
                    SELECT *,
                           greatest(
                               if(arraySum(rest_b) < {min_support:UInt64}
                                  OR arraySum(rest_c) < greatest(toFloat64({min_support:UInt64}), arraySum(all_c) / 2),
                                  inf, sw_psi(rest_b, rest_c)),
                               if(arraySum(tested_rest_b) < {min_support:UInt64}
                                  OR arraySum(tested_rest_c) < {min_support:UInt64},
                                  inf, sw_psi(tested_rest_b, tested_rest_c))) AS rest_score
                    FROM (
                        SELECT *,
                               arrayMap((a, x) -> a - x, all_b, sumForEach(b) OVER dimension) AS rest_b,
                               arrayMap((a, x) -> a - x, all_c, sumForEach(c) OVER dimension) AS rest_c,
                               arrayMap((a, x) -> a - x, dimension_b, sumForEach(b) OVER dimension) AS tested_rest_b,
                               arrayMap((a, x) -> a - x, dimension_c, sumForEach(c) OVER dimension) AS tested_rest_c
                        FROM significant
                        WHERE score > {threshold:Float64}
                        WINDOW dimension AS (PARTITION BY model_name, model_version, model_stage,
                                                          segment_dim, quantity)
                    )
                )
                WINDOW pair AS (PARTITION BY model_name, model_version, model_stage,
                                             least(segment_dim, quantity), greatest(segment_dim, quantity))
            )
        )
    )
    WHERE is_specific OR (segment_dim = '__all__' AND explaining_segments = 0)
)
SELECT
    {detector:String} AS detector,
    model_name, model_version, model_stage, segment_dim, segment_value, quantity,
    {window_start:DateTime('UTC')} AS window_start,
    {window_end:DateTime('UTC')} AS window_end,
    {baseline_start:DateTime('UTC')} AS baseline_start,
    {baseline_end:DateTime('UTC')} AS baseline_end,
    score,
    {threshold:Float64} AS threshold,
    p_value,
    support,
    baseline_support,
    baseline_mean AS baseline_value,
    current_mean AS current_value,
    exemplars AS exemplar_trace_ids,
    concat(
        quantity, ' drifted for ',
        if(segment_dim = '__all__', 'the whole model', concat(segment_dim, '=', segment_value)),
        ': PSI ', toString(round(score, 3)), ' > ', toString({threshold:Float64}),
        -- a MISSING share that moved (by a point or more) is often the whole story: first
        if(abs(missing_share - baseline_missing_share) >= 0.01,
           concat(', missing ', toString(round(100 * baseline_missing_share, 1)), ' % → ',
                  toString(round(100 * missing_share, 1)), ' %'), ''),
        -- each p named by its test; for numbers the reported p is the smaller doubled
        ' (', if(numeric,
                 concat('KS D ', toString(round(ks, 3)), ', KS p ', sw_p_text(ks_p),
                        ', chi-square p ', sw_p_text(chi2_p), ' over ', toString(kept_bins),
                        ' bins: p ', sw_p_text(p_value), ', the smaller doubled'),
                 concat('chi-square p ', sw_p_text(p_value), ' over ', toString(kept_bins), ' bins')),
        ')',
        multiIf(startsWith(compared_with, 'profile '), concat(' against the ', compared_with),
                compared_with != '', concat(' against the ', compared_with, ' in the same window'),
                concat(' against the baseline ', toString({baseline_start:DateTime('UTC')}), ' to ',
                       toString({baseline_end:DateTime('UTC')}), ' UTC')),
        if(isFinite(baseline_mean) AND isFinite(current_mean),
           concat('; mean ', toString(round(baseline_mean, 3)), ' -> ', toString(round(current_mean, 3))),
           ''),
        '; ', toString(support), ' calls in the window',
        if(segment_dim = '__all__', '',
           concat('; the rest of ', segment_dim, ' did not shift (PSI ', toString(round(rest_score, 3)), ')'))
    ) AS details,
    map('psi', score, 'js', js, 'chi2', chi2, 'chi2_p', chi2_p,
        'ks', ks, 'ks_p', ks_p,
        'wasserstein', wasserstein, 'fdr_tests', toFloat64(fdr_tests),
        'rest_psi', if(segment_dim = '__all__', nan, rest_score),
        'missing_share', missing_share, 'baseline_missing_share', baseline_missing_share) AS statistics
FROM reported
-- The window's exemplars, joined to the reported rows at the end rather than carried
-- beside every test through each step: five distinct ones, without a set per group
-- (the FINAL roll-ups' rows hold distinct ids, see rollups.py, FIVE_MINUTES and ONE_HOUR).
LEFT JOIN (
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
           arraySlice(arrayDistinct(groupArrayArray(60)(exemplar_trace_ids)), 1, 5) AS exemplars
    FROM rolled_up
    WHERE bucket_start >= {window_start:DateTime('UTC')} AND bucket_start < {window_end:DateTime('UTC')}
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
) AS window_exemplars USING (model_name, model_version, model_stage, segment_dim, segment_value, quantity)
ORDER BY score DESC
