-- The report's drift heat map: PSI of every quantity in EVERY segment of one model
-- (MISSING, __other__ and the whole model included, not only what a detector
-- reported), the current window against the trailing baseline right before it.
--
-- The bins are psi_drift's (clickhouse/segwatch/clickhouse/detectors/psi_drift.sql,
-- its `segments` step), made by the same lambdas of the detectors' statistics
-- fragment (sw_decile_keys, sw_key_bins, sw_bin_counts, sw_bins_kept), with their
-- edges, names and kept bins taken from the same rows: for numbers the whole
-- model's baseline deciles ({bins} bins), so every segment of a quantity shares one
-- set of bins; one bin per text or boolean value the whole model showed; MISSING a
-- bin of its own; bins empty in the whole model in both windows dropped. PSI is
-- sw_psi (smoothed proportions). Unlike the detector this reads the minute table,
-- not the roll-ups: a report writes nothing.
--
-- Parameters: model, window_start, window_end, baseline_start, baseline_end, bins.
-- One row per (version, stage, segment, quantity) seen in either window.
WITH
/*@statistics*/
live AS (
    SELECT model_version, model_stage, segment_dim, segment_value, quantity,
           bucket_start >= {window_start:DateTime('UTC')} AS is_current,
           sum(sampled) AS sampled_calls,
           sum(missing) AS missing_calls,
           sum(numeric_count) AS numeric_calls,
           sum(sum) AS total,
           sumMap(histogram) AS hist,
           sumMap(categories) AS cats
    FROM ml_segment_aggregates
    WHERE model_name = {model:String}
      AND bucket_start >= {baseline_start:DateTime('UTC')}
      AND bucket_start < {window_end:DateTime('UTC')}
      -- (and its 5-minute slices, the sorting key's: the read skips to them; see
      -- segwatch.clickhouse.rollups.MINUTE_ROWS_BY_KEY)
      AND toStartOfFiveMinutes(bucket_start) >= toStartOfFiveMinutes({baseline_start:DateTime('UTC')})
      AND toStartOfFiveMinutes(bucket_start) < {window_end:DateTime('UTC')}
      AND (bucket_start < {baseline_end:DateTime('UTC')} OR bucket_start >= {window_start:DateTime('UTC')})
    GROUP BY model_version, model_stage, segment_dim, segment_value, quantity, is_current
),
binned AS (
    SELECT *, sw_bin_counts(hist, key_bins, decile_keys, cats, category_names, missing_calls) AS counts
    FROM (
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
                       if(segment_dim = '__all__' AND NOT is_current,
                          sw_decile_keys(hist, {bins:UInt32}), []) AS baseline_deciles
                FROM live
            )
            WINDOW model_quantity AS (PARTITION BY model_version, model_stage, quantity)
        )
    )
),
paired AS (
    SELECT model_version, model_stage, segment_dim, segment_value, quantity,
           anyIf(counts, NOT is_current) AS b_counts, anyIf(counts, is_current) AS c_counts,
           sw_bins_or_zeros(b_counts, c_counts) AS b_all_bins,
           sw_bins_or_zeros(c_counts, b_counts) AS c_all_bins,
           sumIf(sampled_calls, is_current) AS support,
           sumIf(sampled_calls, NOT is_current) AS baseline_support,
           if(sumIf(numeric_calls, NOT is_current) > 0,
              sumIf(total, NOT is_current) / sumIf(numeric_calls, NOT is_current), nan) AS baseline_mean,
           if(sumIf(numeric_calls, is_current) > 0,
              sumIf(total, is_current) / sumIf(numeric_calls, is_current), nan) AS current_mean
    FROM binned
    GROUP BY model_version, model_stage, segment_dim, segment_value, quantity
)
SELECT model_version, model_stage, segment_dim, segment_value, quantity,
       sw_psi(sw_bins_kept(b_all_bins, keep), sw_bins_kept(c_all_bins, keep)) AS psi,
       support, baseline_support, baseline_mean, current_mean
FROM (
    SELECT *,
           anyIf(sw_bins_in_use(b_all_bins, c_all_bins), segment_dim = '__all__')
               OVER (PARTITION BY model_version, model_stage, quantity) AS keep
    FROM paired
)
ORDER BY model_version, model_stage, segment_dim != '__all__', segment_dim, segment_value, quantity
