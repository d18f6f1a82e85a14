-- bias: a segment whose behaviour metric (or numeric output: quantities matching
-- {quantities}) differs from the rest of the model's calls in the same window,
-- e.g. confidence far lower for one language. Not a change over time (the
-- shift detectors find those): a standing difference nobody declared.
--
-- Rest: the whole model (__all__) minus the segment, same version and stage.
-- Score: the effect size |d| = |mean - rest mean| / the pooled standard
-- deviation (floored at {min_relative_scale} of the rest's mean), so a large
-- population does not make a negligible difference an alert. p-value: Welch's
-- two-sided z test on the calls received (weighted moments, the sample behind
-- them as its size).
--
-- Noise control: {min_support} calls in the segment and in the rest; |d| above
-- {threshold} and Benjamini-Hochberg at {fdr} over every test of the run; only
-- a minority differs from the population (a segment with more calls than the
-- rest is the population: in a dimension of two values the smaller one is
-- reported); never a segment of a dimension the config declares an expected
-- bias for that quantity ({expected_biases}: one `model<TAB>dimension<TAB>quantity`
-- per line, quantity empty for all), nor a cross that includes that dimension.
--
-- Output: the detector contract (see manifest.yaml).
WITH
/*@statistics*/
arrayMap(line -> splitByChar('\t', line),
         arrayFilter(line -> line != '', splitByChar('\n', {expected_biases:String}))) AS expected,
moments AS (
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
           sum(numeric_count) AS n, sum(sum) AS total, sum(sum_sq) AS total_sq,
           -- the rows received behind the finite values (weights are 1/sampling rate)
           sum(sampled * numeric_count / greatest(count, 1e-12)) AS received,
           groupUniqArrayArray(5)(exemplar_trace_ids) AS exemplars
    FROM ml_segment_rollup_5m FINAL  -- rolled up first by the runner
    WHERE bucket_start >= {window_start:DateTime('UTC')} AND bucket_start < {window_end:DateTime('UTC')}
      AND match(quantity, {quantities:String})
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
    HAVING n > 0
),
tested AS (
    SELECT *, {detector:String} AS fdr_family,
           abs(d) AS score,
           erfc(abs(z) / sqrt(2)) AS p_value
    FROM (
        SELECT *,
               (mean - rest_mean) / greatest(sqrt((variance + rest_variance) / 2),
                                             {min_relative_scale:Float64} * abs(rest_mean), 1e-12) AS d,
               (mean - rest_mean) / greatest(sqrt(variance / received + rest_variance / rest_received), 1e-12)
                   AS z
        FROM (
            SELECT *,
                   total / n AS mean,
                   greatest(total_sq / n - pow(total / n, 2), 0) AS variance,
                   (all_total - total) / (all_n - n) AS rest_mean,
                   greatest((all_total_sq - total_sq) / (all_n - n) - pow((all_total - total) / (all_n - n), 2), 0)
                       AS rest_variance,
                   all_received - received AS rest_received
            FROM (
                SELECT *,
                       anyIf(n, segment_dim = '__all__') OVER model_quantity AS all_n,
                       anyIf(total, segment_dim = '__all__') OVER model_quantity AS all_total,
                       anyIf(total_sq, segment_dim = '__all__') OVER model_quantity AS all_total_sq,
                       anyIf(received, segment_dim = '__all__') OVER model_quantity AS all_received
                FROM moments
                WINDOW model_quantity AS (PARTITION BY model_name, model_version, model_stage, quantity)
            )
            WHERE segment_dim != '__all__'
              AND received >= {min_support:UInt64}
              AND all_received - received >= {min_support:UInt64}
              AND n <= all_n - n  -- a minority of the calls (see above)
              AND NOT arrayExists(
                  e -> length(e) = 3 AND e[1] = model_name
                       AND has(splitByString('×', segment_dim), e[2]) AND (e[3] = '' OR e[3] = quantity),
                  expected)
        )
    )
),
/*@fdr*/
reported AS (
    SELECT * FROM significant WHERE score > {threshold:Float64}
)
SELECT
    {detector:String} AS detector,
    model_name, model_version, model_stage, segment_dim, segment_value, quantity,
    {window_start:DateTime('UTC')} AS window_start,
    {window_end:DateTime('UTC')} AS window_end,
    {window_start:DateTime('UTC')} AS baseline_start,  -- the rest, in the same window
    {window_end:DateTime('UTC')} AS baseline_end,
    score,
    {threshold:Float64} AS threshold,
    p_value,
    toUInt64(round(received)) AS support,
    toUInt64(round(rest_received)) AS baseline_support,
    rest_mean AS baseline_value,
    mean AS current_value,
    exemplars AS exemplar_trace_ids,
    concat(
        quantity, ' is ', if(d < 0, 'lower', 'higher'), ' for ', segment_dim, '=', segment_value,
        ' than for the rest of the model: mean ', toString(round(mean, 4)), ' against ',
        toString(round(rest_mean, 4)), ' (effect size d ', toString(round(d, 2)), ', threshold ',
        toString({threshold:Float64}),
        if(p_value < 1e-6, ', p < 1e-6', concat(', p = ', toString(round(p_value, 6)))), '); ',
        toString(toUInt64(round(received))), ' calls against ', toString(toUInt64(round(rest_received))),
        '; not declared an expected bias'
    ) AS details,
    map('d', d, 'z', z, 'mean', mean, 'rest_mean', rest_mean, 'sd', sqrt(variance),
        'rest_sd', sqrt(rest_variance), 'fdr_tests', toFloat64(fdr_tests)) AS statistics
FROM reported
ORDER BY score DESC
