-- metric_shift: a behaviour metric (confidence, latency, any ml.metric.*, numeric
-- outputs: quantities matching {quantities}) whose mean in the current window
-- is far from its usual level, per segment.
--
-- Baseline: the means of the same metric in earlier windows of the same length:
--   * trailing ({season} = 0): every window from baseline_start to the current one;
--   * seasonal ({season} > 0, e.g. 7d): the windows within {span} seconds of the
--     same moment {season} seconds ago (same hour last week).
-- Score: the robust z-score |mean - median| / scale of the window means
-- (median and MAD: a few bad windows in the baseline do not move them), the
-- scale 1.4826 MAD calibrated for the number of windows n (x n / (n - 1.1): see
-- sw_robust_scale in statistics.sql); the
-- scale is floored at {min_relative_scale} of the median, so a metric that never
-- varied does not alarm on a rounding change, and at the standard error of the
-- current window's mean (its calls' deviation / sqrt(calls)): a MAD of a
-- dozen window means can come out small by chance, the sampling noise of the
-- window itself is known. p-value: two-sided Student's t with 0.4 n degrees
-- of freedom (sw_robust_dof: a MAD carries less information than a deviation
-- of n values; with n - 1, p < 0.001 came five times too often for n = 24).
-- The floors only ever raise the scale: where they bind, p is conservative.
--
-- Noise control: {min_support} calls in the window and {min_baseline_windows}
-- baseline windows with {min_window_calls} calls each; |z| above {threshold} and
-- Benjamini-Hochberg at {fdr} over every test of the run; a segment is reported
-- only when the rest of its dimension did not shift (|z| of the rest, on the
-- same calibrated scale, at most {rest_threshold}) and the segment moved away
-- from the rest of the model (the robust z of their gap beyond {threshold}: a
-- change spread across a dimension is no one segment's), the whole model only
-- when no segment explains the shift.
--
-- Output: the detector contract (see manifest.yaml).
WITH
/*@statistics*/
toUnixTimestamp({window_start:DateTime('UTC')}) AS current_start,
toUnixTimestamp({window_end:DateTime('UTC')}) AS current_end,
current_end - current_start AS window_seconds,
if({season:UInt32} = 0, toUnixTimestamp({baseline_start:DateTime('UTC')}),
   current_start - {season:UInt32} - {span:UInt32}) AS history_start,
if({season:UInt32} = 0, toUnixTimestamp({baseline_end:DateTime('UTC')}),
   current_end - {season:UInt32} + {span:UInt32}) AS history_end,
-- Slot 0 (array index 1) is the current window, slots 1.. the baseline windows in time order.
toUInt32(1 + intDiv(history_end - history_start + window_seconds - 1, window_seconds)) AS slots,
-- The minute rows of the window and of the history (see `series`).
(b) -> b >= {window_start:DateTime('UTC')} AND b < {window_end:DateTime('UTC')}
       AND toStartOfFiveMinutes(b) >= toStartOfFiveMinutes({window_start:DateTime('UTC')})
       AND toStartOfFiveMinutes(b) < {window_end:DateTime('UTC')} AS metric_window_rows,
(b) -> b >= toDateTime(history_start) AND b < toDateTime(history_end)
       AND toStartOfFiveMinutes(b) >= toStartOfFiveMinutes(toDateTime(history_start))
       AND toStartOfFiveMinutes(b) < toDateTime(history_end) AS metric_history_rows,
series AS (
    SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
           groupArrayInsertAt(0., slots)(total, toUInt32(slot)) AS totals,
           groupArrayInsertAt(0., slots)(numbers, toUInt32(slot)) AS counts,
           sumIf(received, slot = 0) AS support,
           sumIf(squares, slot = 0) AS current_squares,
           sumIf(numeric_received, slot = 0) AS current_numeric_received,
           sumIf(received, slot > 0) AS baseline_support,
           anyIf(exemplars, slot = 0) AS exemplars
    FROM (
        -- The minute rows, not a roll-up: this detector reads a few quantities over hours,
        -- and rolling every quantity of those hours up into 5-minute buckets on a first
        -- run cost ten times this read (README, Benchmarks: bench/detect.py). Unmerged
        -- rows of a minute add up like merged ones: only sums are taken per row.
        -- (Each range also as the sorting key's 5-minute slices, which it implies: the engine
        -- then skips to them instead of reading the whole table's bucket_start; see
        -- MINUTE_ROWS_BY_KEY in segwatch.clickhouse.rollups.)
        -- The window (slot 0) and the baseline windows are two reads: only the window's
        -- rows are read for their exemplars (an -If combinator reads its column for every
        -- row: the baseline's exemplar ids were a tenth of the detector's run). History
        -- rows from the window's start on are the window's, or not read.
        SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
               0 AS slot,
               sum(sum) AS total, sum(numeric_count) AS numbers, sum(sampled) AS received,
               sum(sum_sq) AS squares,
               -- the received calls with a number: of the slot's sums, which no merge changes
               sum(sampled) * sum(numeric_count) / greatest(sum(count), 1e-12) AS numeric_received,
               -- five distinct exemplars of the window (its minute rows repeat ids: see
               -- FIVE_MINUTES in segwatch.clickhouse.rollups)
               groupUniqArrayArray(5)(exemplar_trace_ids) AS exemplars
        FROM ml_segment_aggregates
        WHERE match(quantity, {quantities:String}) AND metric_window_rows(bucket_start)
        GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
        UNION ALL
        SELECT model_name, model_version, model_stage, segment_dim, segment_value, quantity,
               1 + intDiv(toUnixTimestamp(bucket_start) - history_start, window_seconds) AS slot,
               sum(sum) AS total, sum(numeric_count) AS numbers, sum(sampled) AS received,
               sum(sum_sq) AS squares,
               -- the received calls with a number: of the slot's sums, which no merge changes
               sum(sampled) * sum(numeric_count) / greatest(sum(count), 1e-12) AS numeric_received,
               CAST([], 'Array(String)') AS exemplars
        FROM ml_segment_aggregates
        WHERE match(quantity, {quantities:String}) AND bucket_start < {window_start:DateTime('UTC')}
          AND metric_history_rows(bucket_start)
        GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity, slot
    )
    GROUP BY model_name, model_version, model_stage, segment_dim, segment_value, quantity
),
tested AS (
    -- Robust z of each segment, and its dimension's series beside it (for the rest).
    SELECT *, {detector:String} AS fdr_family,
           abs(z) AS score,
           -- (1 when |z| cannot be reported: see fdr.sql)
           if(abs(z) <= {threshold:Float64}, 1.0, sw_student_t_2sf(z, sw_robust_dof(length(means)))) AS p_value
    FROM (
        SELECT *, (current_mean - median) / scale AS z
        FROM (
            SELECT *,
                   greatest(sw_robust_scale(means),
                            {min_relative_scale:Float64} * abs(median),
                            -- the current mean's own standard error: a few quiet windows
                            -- must not make its sampling noise look like a shift
                            standard_error, 1e-12) AS scale
            FROM (
                SELECT *, sw_median(means) AS median
                FROM (
                    SELECT *,
                           sw_window_means(totals, counts, {min_window_calls:Float64}) AS means,
                           totals[1] / counts[1] AS current_mean,
                           sqrt(greatest(current_squares / counts[1] - pow(current_mean, 2), 0)
                                / greatest(current_numeric_received, 1)) AS standard_error,
                           -- the two references for the rest of the dimension (see `reported`)
                           anyIf(totals, segment_dim = '__all__') OVER model_quantity AS all_totals,
                           anyIf(counts, segment_dim = '__all__') OVER model_quantity AS all_counts,
                           sumForEach(totals) OVER dimension AS dimension_totals,
                           sumForEach(counts) OVER dimension AS dimension_counts
                    FROM series
                    WHERE support >= {min_support:UInt64} AND counts[1] > 0
                    WINDOW dimension AS (PARTITION BY model_name, model_version, model_stage, segment_dim, quantity),
                           model_quantity AS (PARTITION BY model_name, model_version, model_stage, quantity)
                )
                WHERE length(means) >= {min_baseline_windows:UInt32}
            )
        )
    )
),
/*@fdr*/
reported AS (
    -- A segment's shift is its own when the rest of its dimension kept its
    -- level (rest_z) and the segment moved away from the rest of the model
    -- (gap_z: the robust z of its mean minus the mean of every other call, window
    -- by window, on the same calibrated scale). A change spread across the
    -- dimension moves every segment alike: its gaps hold, even where a segment's
    -- own scale came out small by chance and its z passed the threshold (and the
    -- unflagged rest, the segments the spread moved least, seemed to hold).
    -- The whole model is reported only when no segment explains the shift.
    SELECT *
    FROM (
        SELECT *,
               countIf(is_specific) OVER (PARTITION BY model_name, model_version, model_stage, quantity)
                   AS explaining_segments
        FROM (
            SELECT *,
                   segment_dim != '__all__' AND rest_z <= {rest_threshold:Float64}
                   AND abs(gap_z) > {threshold:Float64} AS is_specific
            FROM (
                -- |robust z| of the rest, the larger of its two views; inf when too thin,
                -- or when the flagged segments hold most of the calls (the model shifted)
                SELECT *,
                       greatest(
                           if(length(rest_means) < {min_baseline_windows:UInt32}
                              OR rest_counts[1] < greatest({min_window_calls:Float64}, all_counts[1] / 2), inf,
                              abs(rest_totals[1] / rest_counts[1] - sw_median(rest_means))
                              / greatest(sw_robust_scale(rest_means),
                                         {min_relative_scale:Float64} * abs(sw_median(rest_means)), 1e-12)),
                           if(length(tested_rest_means) < {min_baseline_windows:UInt32}
                              OR tested_rest_counts[1] < {min_window_calls:Float64}, inf,
                              abs(tested_rest_totals[1] / tested_rest_counts[1] - sw_median(tested_rest_means))
                              / greatest(sw_robust_scale(tested_rest_means),
                                         {min_relative_scale:Float64} * abs(sw_median(tested_rest_means)), 1e-12)))
                           AS rest_z,
                       -- inf when there are too few windows to judge (rest_z decides then)
                       if(length(gap_means) < {min_baseline_windows:UInt32}
                          OR all_counts[1] - counts[1] < {min_window_calls:Float64}, inf,
                          (current_mean - (all_totals[1] - totals[1]) / (all_counts[1] - counts[1]) - sw_median(gap_means))
                          / greatest(sw_robust_scale(gap_means), {min_relative_scale:Float64} * abs(median),
                                     standard_error, 1e-12)) AS gap_z
                FROM (
                    SELECT *,
                           sw_window_means(rest_totals, rest_counts, {min_window_calls:Float64}) AS rest_means,
                           sw_window_means(tested_rest_totals, tested_rest_counts, {min_window_calls:Float64})
                               AS tested_rest_means,
                           -- the segment's mean minus the rest of the model's, in each baseline
                           -- window where both had enough calls
                           arrayFilter(x -> isFinite(x), arrayMap(
                               (t, n, rt, rn) -> if(n >= {min_window_calls:Float64} AND rn >= {min_window_calls:Float64},
                                                    t / n - rt / rn, nan),
                               arraySlice(totals, 2), arraySlice(counts, 2),
                               arraySlice(arrayMap((a, x) -> a - x, all_totals, totals), 2),
                               arraySlice(arrayMap((a, x) -> a - x, all_counts, counts), 2))) AS gap_means
                    FROM (
                        -- The rest of the dimension, two views: the whole model minus every
                        -- flagged segment of the dimension, and its tested segments minus the
                        -- flagged ones (a segment without enough calls, e.g. a new value, is
                        -- then no reference).
                        SELECT *,
                               arrayMap((a, x) -> a - x, all_totals, sumForEach(totals) OVER dimension) AS rest_totals,
                               arrayMap((a, x) -> a - x, all_counts, sumForEach(counts) OVER dimension) AS rest_counts,
                               arrayMap((a, x) -> a - x, dimension_totals, sumForEach(totals) OVER dimension)
                                   AS tested_rest_totals,
                               arrayMap((a, x) -> a - x, dimension_counts, sumForEach(counts) OVER dimension)
                                   AS tested_rest_counts
                        FROM significant
                        WHERE score > {threshold:Float64}
                        WINDOW dimension AS (PARTITION BY model_name, model_version, model_stage,
                                                          segment_dim, quantity)
                    )
                )
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
    toDateTime(history_start, 'UTC') AS baseline_start,
    toDateTime(history_end, 'UTC') AS baseline_end,
    score,
    {threshold:Float64} AS threshold,
    p_value,
    support,
    baseline_support,
    median AS baseline_value,
    current_mean AS current_value,
    exemplars AS exemplar_trace_ids,
    concat(
        quantity, if(z < 0, ' dropped', ' rose'), ' for ',
        if(segment_dim = '__all__', 'the whole model', concat(segment_dim, '=', segment_value)),
        ': ', toString(round(current_mean, 4)), ' against a median of ', toString(round(median, 4)),
        if({season:UInt32} = 0,
           concat(' over the ', toString(length(means)), ' windows before'),
           concat(' in ', toString(length(means)), ' windows around the same time ',
                  toString(round({season:UInt32} / 86400, 1)), ' days earlier')),
        ' (robust z ', toString(round(z, 2)), ', threshold ', toString({threshold:Float64}),
        if(p_value < 1e-6, ', Student''s t p < 1e-6', concat(', Student''s t p = ', toString(round(p_value, 6)))),
        ' with ', toString(round(sw_robust_dof(length(means)), 1)), ' degrees of freedom); ',
        toString(support), ' calls in the window',
        if(segment_dim = '__all__', '',
           concat('; the rest of ', segment_dim, ' held its level (|z| ', toString(round(rest_z, 2)),
                  ') and the segment moved away from the rest of the model (z ', toString(round(gap_z, 2)), ')'))
    ) AS details,
    map('z', z, 'median', median, 'scale', scale, 'standard_error', standard_error, 'current_mean', current_mean,
        'baseline_windows', toFloat64(length(means)), 'fdr_tests', toFloat64(fdr_tests),
        'rest_z', if(segment_dim = '__all__', nan, rest_z),
        'gap_z', if(segment_dim = '__all__', nan, gap_z)) AS statistics
FROM reported
ORDER BY score DESC
