-- bias: a segment's gap from the rest of its dimension in a behaviour metric or
-- numeric output (quantities matching {quantities}) that is new or growing, e.g.
-- confidence for one language falling behind the other languages' since an hour
-- ago. A gap the model always had is how it depends on its inputs, not bias:
-- only its change is news. Gap: the segment's mean minus the rest's, where the
-- rest is the other segments of the same dimension (model, version and stage
-- alike): the calls that have this dimension at all, so a context only some of
-- the model's calls carry is compared among those.
--
-- Two tests per segment and quantity:
--   * change (every dimension): the gap in the window against the gap in the
--     baseline (the trailing period right before the window). Score: the
--     effect size |gap - baseline gap| / the deviation pooled over segment and
--     rest in both periods (floored at {min_relative_scale} of the rest's mean),
--     so a large population does not make a negligible change an alert.
--     p-value: two-sided z test of the change, its standard error from the
--     gap's Welch standard errors in both periods (sqrt(var/n + rest var/rest n)
--     each; weighted moments, the calls received as the sample). With
--     {growth_only} = 1 only a gap that grew (|gap| now above |gap| before) is
--     reported: a bias closing again (a fix) is no alarm.
--   * gap (only dimensions the config declares sensitive, one
--     `model<TAB>dimension` per line in {sensitive_dimensions}, model empty for
--     every model; a cross including a sensitive dimension is sensitive): the
--     standing gap in the window, as fairness monitoring wants it. Score:
--     Cohen's |d| on the pooled deviation (same floor); p-value: Welch's z test.
--     Never for a dimension the config declares an expected bias for that
--     quantity ({expected_biases}: one `model<TAB>dimension<TAB>quantity` per
--     line, quantity empty for all), nor for a cross that includes it: that gap
--     is known. Its change is still tested: a known gap that grows is news.
-- A segment and quantity found by both is reported once, as the change.
--
-- Noise control: {min_support} calls in the segment and in the rest, in the
-- window and (change) in the baseline; the score above {threshold} and
-- Benjamini-Hochberg at {fdr} over every test of the run (both kinds); only a
-- minority differs from the population (a segment with more calls than the
-- rest of its dimension is the population: in a dimension of two values the
-- smaller one is reported).
--
-- Output: the detector contract (see manifest.yaml). For a change, baseline and
-- current value are the gap before and now, support and baseline support the
-- segment's calls now and before; for a standing gap, the rest's mean and the
-- segment's, the segment's calls and the rest's, the window both times.
WITH
/*@statistics*/
/*@rolled_up*/
arrayMap(line -> splitByChar('\t', line),
         arrayFilter(line -> line != '', splitByChar('\n', {expected_biases:String}))) AS expected,
arrayMap(line -> splitByChar('\t', line),
         arrayFilter(line -> line != '', splitByChar('\n', {sensitive_dimensions:String}))) AS sensitive,
-- Moments from sums (population variance, as the aggregates allow).
(total, n) -> total / n AS bias_mean,
(total, total_sq, n) -> greatest(total_sq / n - pow(total / n, 2), 0) AS bias_variance,
-- A number with its sign, for sentences: +0.0213, -0.31.
(x) -> concat(if(x >= 0, '+', ''), toString(round(x, 4))) AS bias_signed,
dateDiff('second', {baseline_start:DateTime('UTC')}, {baseline_end:DateTime('UTC')}) AS baseline_seconds,
if(baseline_seconds % 3600 = 0, concat(toString(intDiv(baseline_seconds, 3600)), ' h'),
   concat(toString(intDiv(baseline_seconds, 60)), ' min')) AS baseline_length,
moments AS (
    -- Per segment: the window's moments (n, total, ...) and the baseline's (..._before).
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
           sumIf(numeric_count, in_window) AS n, sumIf(sum, in_window) AS total,
           sumIf(sum_sq, in_window) AS total_sq,
           -- the rows received behind the finite values (weights are 1/sampling rate)
           sumIf(sampled * numeric_count / greatest(count, 1e-12), in_window) AS received,
           sumIf(numeric_count, NOT in_window) AS n_before, sumIf(sum, NOT in_window) AS total_before,
           sumIf(sum_sq, NOT in_window) AS total_sq_before,
           sumIf(sampled * numeric_count / greatest(count, 1e-12), NOT in_window) AS received_before,
           -- five distinct exemplars (see psi_drift.sql)
           arraySlice(arrayDistinct(groupArrayArrayIf(60)(exemplar_trace_ids, in_window)), 1, 5) AS exemplars
    FROM (
        -- the window's 5-minute rows, the baseline's whole hours' 1-hour rows (rolled_up)
        SELECT *, bucket_start >= {window_start:DateTime('UTC')} AS in_window
        FROM rolled_up
        WHERE match(quantity, {quantities:String}) AND segment_dim != '__all__'
    )
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
),
gaps AS (
    -- Each period's gap from the rest of the dimension, and its Welch standard error.
    SELECT *,
           bias_mean(total, n) AS mean,
           bias_variance(total, total_sq, n) AS variance,
           bias_mean(dim_total - total, dim_n - n) AS rest_mean,
           bias_variance(dim_total - total, dim_total_sq - total_sq, dim_n - n) AS rest_variance,
           dim_received - received AS rest_received,
           mean - rest_mean AS gap,
           sqrt(variance / received + rest_variance / rest_received) AS gap_error,
           bias_mean(total_before, n_before) AS mean_before,
           bias_variance(total_before, total_sq_before, n_before) AS variance_before,
           bias_mean(dim_total_before - total_before, dim_n_before - n_before) AS rest_mean_before,
           bias_variance(dim_total_before - total_before, dim_total_sq_before - total_sq_before,
                         dim_n_before - n_before) AS rest_variance_before,
           dim_received_before - received_before AS rest_received_before,
           mean_before - rest_mean_before AS gap_before,
           sqrt(variance_before / received_before + rest_variance_before / rest_received_before)
               AS gap_error_before
    FROM (
        SELECT *,
               sum(n) OVER dimension AS dim_n, sum(total) OVER dimension AS dim_total,
               sum(total_sq) OVER dimension AS dim_total_sq, sum(received) OVER dimension AS dim_received,
               sum(n_before) OVER dimension AS dim_n_before,
               sum(total_before) OVER dimension AS dim_total_before,
               sum(total_sq_before) OVER dimension AS dim_total_sq_before,
               sum(received_before) OVER dimension AS dim_received_before
        FROM moments
        WINDOW dimension AS (PARTITION BY model_name, model_version, model_stage, segment_dim, quantity)
    )
    WHERE n > 0
      AND received >= {min_support:UInt64}
      AND rest_received >= {min_support:UInt64}
      AND n <= dim_n - n  -- a minority of the calls (see above)
),
tested AS (
    SELECT *, test,  -- (an ARRAY JOIN's alias is not in *)
           {detector:String} AS fdr_family,
           if(test = 'change', abs(change_d), abs(d)) AS score,
           erfc(abs(if(test = 'change', change_z, z)) / sqrt(2)) AS p_value
    FROM (
        SELECT *,
               arrayExists(e -> length(e) = 2 AND (e[1] = '' OR e[1] = model_name)
                                AND has(splitByString('×', segment_dim), e[2]), sensitive) AS is_sensitive,
               arrayExists(e -> length(e) = 3 AND e[1] = model_name
                                AND has(splitByString('×', segment_dim), e[2]) AND (e[3] = '' OR e[3] = quantity),
                           expected) AS is_expected,
               received_before >= {min_support:UInt64} AND rest_received_before >= {min_support:UInt64}
                   AS has_baseline,
               greatest({min_relative_scale:Float64} * abs(rest_mean), 1e-12) AS scale_floor,
               gap / greatest(sqrt((variance + rest_variance) / 2), scale_floor) AS d,
               gap / greatest(gap_error, 1e-12) AS z,
               greatest(sqrt((variance + rest_variance + variance_before + rest_variance_before) / 4),
                        scale_floor) AS change_scale,
               (gap - gap_before) / change_scale AS change_d,
               (gap - gap_before) / greatest(sqrt(pow(gap_error, 2) + pow(gap_error_before, 2)), 1e-12)
                   AS change_z
        FROM gaps
    )
    ARRAY JOIN arrayFilter(t -> (t = 'change' AND has_baseline) OR (t = 'gap' AND is_sensitive AND NOT is_expected),
                           ['change', 'gap']) AS test
),
/*@fdr*/
reported AS (
    SELECT *
    FROM significant
    WHERE score > {threshold:Float64}
      AND (test = 'gap' OR {growth_only:UInt8} = 0 OR abs(gap) > abs(gap_before))
    ORDER BY test = 'change' DESC, score DESC
    LIMIT 1 BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
)
SELECT
    {detector:String} AS detector,
    model_name, model_version, model_stage, segment_dim, segment_value, quantity,
    {window_start:DateTime('UTC')} AS window_start,
    {window_end:DateTime('UTC')} AS window_end,
    if(test = 'change', {baseline_start:DateTime('UTC')}, {window_start:DateTime('UTC')}) AS baseline_start,
    if(test = 'change', {baseline_end:DateTime('UTC')}, {window_end:DateTime('UTC')}) AS baseline_end,
    score,
    {threshold:Float64} AS threshold,
    p_value,
    toUInt64(round(received)) AS support,
    toUInt64(round(if(test = 'change', received_before, rest_received))) AS baseline_support,
    if(test = 'change', gap_before, rest_mean) AS baseline_value,
    if(test = 'change', gap, mean) AS current_value,
    exemplars AS exemplar_trace_ids,
    if(test = 'change',
       concat(
           quantity, '''s gap for ', segment_dim, '=', segment_value, ' from the rest of ', segment_dim, ' ',
           -- reversed: a gap of another sign before that was no rounding (a small effect, 0.2)
           multiIf(gap * gap_before < 0 AND abs(gap_before) > 0.2 * change_scale, 'reversed',
                   abs(gap) > abs(gap_before), 'grew', 'shrank'),
           ' from ', bias_signed(gap_before), ' to ', bias_signed(gap),
           ' (mean ', toString(round(mean, 4)), ' against ', toString(round(rest_mean, 4)),
           ' in this window, ', toString(round(mean_before, 4)), ' against ', toString(round(rest_mean_before, 4)),
           ' in the ', baseline_length, ' before; effect size ', toString(round(change_d, 2)), ', threshold ',
           toString({threshold:Float64}), '); z test of the change in gap (Welch standard errors in both periods), ',
           if(p_value < 1e-6, 'p < 1e-6', concat('p = ', toString(round(p_value, 6)))), '; ',
           toString(toUInt64(round(received))), ' calls now, ', toString(toUInt64(round(received_before))),
           ' before', multiIf(is_expected, '; the gap is declared expected, not its growth',
                              is_sensitive, '; a sensitive field', '')),
       concat(
           quantity, ' is ', if(d < 0, 'lower', 'higher'), ' for ', segment_dim, '=', segment_value,
           ' than for the rest of ', segment_dim, ': mean ', toString(round(mean, 4)), ' against ',
           toString(round(rest_mean, 4)), ' (effect size d ', toString(round(d, 2)), ', threshold ',
           toString({threshold:Float64}), '); Welch''s z test, ',
           if(p_value < 1e-6, 'p < 1e-6', concat('p = ', toString(round(p_value, 6)))), '; ',
           toString(toUInt64(round(received))), ' calls against ', toString(toUInt64(round(rest_received))),
           '; a standing gap on a field declared sensitive, not declared an expected bias')
    ) AS details,
    -- (finite numbers only: a standing gap found without a baseline has no change)
    mapFilter((k, v) -> isFinite(v), map(
        'd', d, 'z', z, 'change_d', change_d, 'change_z', change_z,
        'gap', gap, 'gap_before', gap_before, 'gap_error', gap_error, 'gap_error_before', gap_error_before,
        'mean', mean, 'rest_mean', rest_mean, 'sd', sqrt(variance), 'rest_sd', sqrt(rest_variance),
        'mean_before', mean_before, 'rest_mean_before', rest_mean_before,
        'sensitive', toFloat64(is_sensitive), 'change', toFloat64(test = 'change'),
        'fdr_tests', toFloat64(fdr_tests))) AS statistics
FROM reported
ORDER BY score DESC
