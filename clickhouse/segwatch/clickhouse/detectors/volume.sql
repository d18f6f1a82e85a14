-- volume: a segment's traffic drops or vanishes while the model's does not.
--
-- Expected calls: the segment's share of the model's calls in the baseline
-- times the model's calls in the window, so a model-wide dip (night, a quiet
-- day) moves every segment alike and flags none. Score: the share of the
-- expected calls that did not come (1 = the segment vanished). p-value: the
-- Poisson chance of so few calls (P(X <= observed) for a mean of the expected).
-- A segment with no call in the window still counts: it is read from the baseline.
--
-- Noise control: {min_support} expected calls, the drop above {threshold},
-- Benjamini-Hochberg at {fdr} over every segment of the run. (A cross of a
-- vanished parent vanishes too: the runner keeps one alert per family.)
--
-- Output: the detector contract (see manifest.yaml).
WITH
/*@statistics*/
/*@rolled_up*/
tested AS (
    SELECT *, {detector:String} AS fdr_family,
           greatest(0., 1 - support / expected) AS score,
           -- P(X <= k) for a Poisson count of mean `expected` is Q(k + 1, expected)
           -- (1 when the drop cannot be reported: see fdr.sql)
           if(score <= {threshold:Float64}, 1.0, sw_gamma_q(support + 1, expected)) AS p_value
    FROM (
        SELECT *,
               baseline_support / model_baseline_support * model_support AS expected
        FROM (
            SELECT *,
                   anyIf(support, segment_dim = '__all__') OVER model AS model_support,
                   anyIf(baseline_support, segment_dim = '__all__') OVER model AS model_baseline_support
            FROM (
                SELECT model_name, model_version, model_stage, segment_dim, segment_value,
                       toUInt64(round(sumIf(calls, is_current))) AS support,
                       toUInt64(round(sumIf(calls, NOT is_current))) AS baseline_support,
                       groupUniqArrayArrayIf(5)(bucket_exemplars, NOT is_current) AS exemplars
                FROM (
                    -- Every quantity's row counts every call of its segment and bucket
                    -- (MISSING included), so calls = the mean of its quantities' rows
                    -- (one row each: rolled_up reads the roll-ups FINAL).
                    SELECT model_name, model_version, model_stage, segment_dim, segment_value,
                           bucket_start >= {window_start:DateTime('UTC')} AS is_current,
                           avg(sampled) AS calls,
                           any(exemplar_trace_ids) AS bucket_exemplars  -- its quantities' rows hold the same calls
                    FROM rolled_up
                    WHERE bucket_start >= {baseline_start:DateTime('UTC')}
                      AND bucket_start < {window_end:DateTime('UTC')}
                      AND (bucket_start < {baseline_end:DateTime('UTC')}
                           OR bucket_start >= {window_start:DateTime('UTC')})
                    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, bucket_start
                )
                GROUP BY model_name, model_version, model_stage, segment_dim, segment_value
            )
            WINDOW model AS (PARTITION BY model_name, model_version, model_stage)
        )
        WHERE model_baseline_support > 0
    )
    WHERE segment_dim != '__all__' AND expected >= {min_support:UInt64}
),
/*@fdr*/
reported AS (
    SELECT * FROM significant WHERE score > {threshold:Float64}
)
SELECT
    {detector:String} AS detector,
    model_name, model_version, model_stage, segment_dim, segment_value,
    'calls' AS quantity,
    {window_start:DateTime('UTC')} AS window_start,
    {window_end:DateTime('UTC')} AS window_end,
    {baseline_start:DateTime('UTC')} AS baseline_start,
    {baseline_end:DateTime('UTC')} AS baseline_end,
    score,
    {threshold:Float64} AS threshold,
    p_value,
    support,
    baseline_support,
    expected AS baseline_value,
    toFloat64(support) AS current_value,
    exemplars AS exemplar_trace_ids,
    concat(
        'traffic ', if(support = 0, 'vanished', 'dropped'), ' for ', segment_dim, '=', segment_value, ': ',
        toString(support), ' calls in the window where its usual share (',
        toString(round(100 * baseline_support / model_baseline_support, 2)), ' %) of the model''s ',
        toString(model_support), ' calls gives ', toString(round(expected)),
        ' (', toString(round(100 * score)), ' % of them did not come',
        if(p_value < 1e-6, ', Poisson p < 1e-6', concat(', Poisson p = ', toString(round(p_value, 6)))), ')'
    ) AS details,
    map('expected', expected, 'drop', score, 'baseline_share', baseline_support / model_baseline_support,
        'model_calls', toFloat64(model_support), 'fdr_tests', toFloat64(fdr_tests)) AS statistics
FROM reported
ORDER BY score DESC
