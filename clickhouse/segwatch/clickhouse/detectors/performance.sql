-- performance: a segment where the model got worse at its job, once the truth is
-- known. Reads the labelled calls (ml_model_calls joined with the latest label
-- of each prediction in ml_labels); the window lags the run by the manifest's
-- `delay` (label maturity), so labels still on their way do not count as missing.
--
-- What each label grades ({labels}: one line per model and label, from the
-- config: model, label.<name>, kind, output.<prediction>, output.<score>,
-- positive class, score threshold):
--   * classification: accuracy (predicted class = the truth), precision and
--     recall of the positive class, AUC (when a score is given; Mann-Whitney);
--     the predicted class is the prediction output, or score >= threshold;
--   * regression: MAE and RMSE of prediction - truth.
-- Segments: the whole model and every category feature and context value of
-- the calls (numbers are not segmented here: the raw calls keep values, not
-- their buckets).
--
-- Score: the loss against the baseline (the calls of the `baseline` before the
-- window): points lost for accuracy, precision, recall and AUC (threshold
-- {threshold}), the relative rise for MAE and RMSE ({error_threshold}).
-- p-value: one-sided z test on the two estimates' standard errors (binomial;
-- Hanley-McNeil for AUC; the errors' deviation for MAE, delta method for RMSE).
--
-- Noise control: {min_support} labelled calls in the segment in both periods and
-- {min_subset} in the subset a metric reads (predicted or true positives);
-- Benjamini-Hochberg at {fdr} over every test; a segment is reported only when
-- the rest of its dimension kept its performance (loss at most a third of the
-- threshold; for AUC the whole model's loss stands in for the rest), the whole
-- model only when no segment explains the loss.
--
-- Output: the detector contract (see manifest.yaml).
WITH
/*@statistics*/
arrayMap(line -> splitByChar('\t', line),
         arrayFilter(line -> line != '', splitByChar('\n', {labels:String}))) AS tasks,
-- one key of a call's or a label's maps as text ('' when absent); numbers as written by toString
(strings, numbers, key) -> if(mapContains(strings, key), strings[key],
                              if(mapContains(numbers, key), toString(numbers[key]), '')) AS sw_text_of,
(name, num, den) -> if(name = 'rmse', sqrt(num / den), num / den) AS sw_metric_value,
-- the loss: points lost for a score, the relative rise for an error
(higher_is_better, before, now) -> if(higher_is_better, before - now,
                                      (now - before) / greatest(before, 1e-12)) AS sw_loss,
-- Hanley & McNeil (1982): the standard error of an AUC from its positives and negatives
(a, positives, negatives) -> sqrt(greatest(a * (1 - a) + (positives - 1) * (a / (2 - a) - a * a)
                                           + (negatives - 1) * (2 * a * a / (1 + a) - a * a), 0)
                                  / greatest(positives * negatives, 1)) AS sw_auc_se,
(histograms, k) -> arraySlice(histograms, 100 * (k - 1) + 1, 100) AS sw_part,
-- AUC from score histograms (positives and negatives per bin, bins in score
-- order): P(a positive outscores a negative), ties (same bin) counting half
(positives, negatives) -> arraySum(arrayMap((p, below, n) -> p * (below + n / 2), positives,
        arrayMap((c, n) -> c - n, arrayCumSum(negatives), negatives), negatives))
        / greatest(arraySum(positives) * arraySum(negatives), 1e-12) AS sw_histogram_auc,
graded AS (
    SELECT model_name, model_version, model_stage, label_name, kind, has_score,
           segment.1 AS segment_dim, segment.2 AS segment_value,
           timestamp >= {window_start:DateTime('UTC')} AS is_current,
           trace_id, truth, predicted, score_value, error,
           -- a score histogram of 100 bins over the task's score range, for the AUC of the
           -- rest of a dimension (histograms subtract, exact AUCs do not)
           toUInt8(if(score_high > score_low,
                      least(99, floor((score_value - score_low) / (score_high - score_low) * 100)), 0))
               AS score_bin
    FROM (
      SELECT *,
             min(score_value) OVER task_calls AS score_low, max(score_value) OVER task_calls AS score_high
      FROM (
        SELECT c.model_name AS model_name, c.model_version AS model_version, c.model_stage AS model_stage,
               c.timestamp AS timestamp, c.trace_id AS trace_id, c.strings AS call_strings,
               task[2] AS label_name, task[3] AS kind, task[5] != '' AS has_score,
               sw_text_of(l.strings, l.numbers, task[2]) AS truth,
               if(task[4] != '', sw_text_of(c.strings, c.numbers, task[4]),
                  -- from the score alone the class is positive or not: a call scored
                  -- below the threshold predicts "not positive", right for any other truth
                  if(c.numbers[task[5]] >= toFloat64OrZero(task[7]), task[6],
                     if(truth != task[6], truth, concat('not ', task[6])))) AS predicted,
               c.numbers[task[5]] AS score_value,
               c.numbers[task[4]] - l.numbers[task[2]] AS error
        FROM ml_model_calls AS c
        INNER JOIN (SELECT model_name, prediction_id, strings, numbers FROM ml_labels FINAL) AS l
            ON c.model_name = l.model_name AND c.prediction_id = l.prediction_id
        ARRAY JOIN arrayFilter(t -> length(t) = 7, tasks) AS task
        WHERE c.prediction_id != '' AND task[1] = c.model_name
          AND c.timestamp >= {baseline_start:DateTime('UTC')} AND c.timestamp < {window_end:DateTime('UTC')}
          AND (c.timestamp < {baseline_end:DateTime('UTC')} OR c.timestamp >= {window_start:DateTime('UTC')})
      )
      WINDOW task_calls AS (PARTITION BY model_name, label_name)
    )
    ARRAY JOIN arrayConcat([('__all__', '__all__')], arrayMap(
        key -> (key, call_strings[key]),
        arrayFilter(key -> startsWith(key, 'feature.') OR startsWith(key, 'context.'), mapKeys(call_strings))))
        AS segment
    WHERE truth != ''
),
periods AS (
    SELECT model_name, model_version, model_stage, label_name, kind, segment_dim, segment_value,
           any(has_score) AS scored,
           toFloat64(countIf(NOT is_current)) AS n_b, toFloat64(countIf(is_current)) AS n_c,
           countIf(NOT is_current AND predicted = truth) AS right_b, countIf(is_current AND predicted = truth) AS right_c,
           countIf(NOT is_current AND predicted = positive AND truth = positive) AS tp_b,
           countIf(is_current AND predicted = positive AND truth = positive) AS tp_c,
           countIf(NOT is_current AND predicted = positive) AS pp_b, countIf(is_current AND predicted = positive) AS pp_c,
           toFloat64(countIf(NOT is_current AND truth = positive)) AS ap_b,
           toFloat64(countIf(is_current AND truth = positive)) AS ap_c,
           arrayAUC(groupArrayIf(score_value, NOT is_current), groupArrayIf(truth = positive, NOT is_current)) AS auc_b,
           arrayAUC(groupArrayIf(score_value, is_current), groupArrayIf(truth = positive, is_current)) AS auc_c,
           sumIf(abs(error), NOT is_current) AS abs_b, sumIf(abs(error), is_current) AS abs_c,
           sumIf(error * error, NOT is_current) AS sq_b, sumIf(error * error, is_current) AS sq_c,
           sumIf(pow(error, 4), NOT is_current) AS sq2_b, sumIf(pow(error, 4), is_current) AS sq2_c,
           sumMapIf(map(score_bin, 1.), NOT is_current AND truth = positive) AS positives_b,
           sumMapIf(map(score_bin, 1.), NOT is_current AND truth != positive) AS negatives_b,
           sumMapIf(map(score_bin, 1.), is_current AND truth = positive) AS positives_c,
           sumMapIf(map(score_bin, 1.), is_current AND truth != positive) AS negatives_c,
           groupUniqArrayIf(5)(trace_id, is_current AND predicted != truth) AS exemplars
    FROM (
        SELECT *, arrayFirst(t -> t[1] = model_name AND t[2] = label_name, tasks)[6] AS positive
        FROM graded
    )
    GROUP BY model_name, model_version, model_stage, label_name, kind, segment_dim, segment_value
),
measured AS (
    -- One row per metric: (name, baseline numerator, denominator, current
    -- numerator, denominator) of a mean (a share, or mean |error|, or mean
    -- squared error); AUC carries its own value in the numerator, 1 below it.
    -- Beside each, the whole model's (the rest of a dimension is computed from it).
    SELECT *,
           anyIf(num_b, segment_dim = '__all__') OVER whole AS all_num_b,
           anyIf(den_b, segment_dim = '__all__') OVER whole AS all_den_b,
           anyIf(num_c, segment_dim = '__all__') OVER whole AS all_num_c,
           anyIf(den_c, segment_dim = '__all__') OVER whole AS all_den_c,
           anyIf(histograms, segment_dim = '__all__') OVER whole AS all_histograms
    FROM (
        SELECT model_name, model_version, model_stage, label_name, segment_dim, segment_value,
               n_b, n_c, ap_b, ap_c, exemplars, sq_b, sq_c, sq2_b, sq2_c,
               -- positives and negatives per score bin, baseline then current, one
               -- array of 4 x 100 (AUC rows only; sumForEach adds flat arrays)
               if(metric.1 = 'auc', arrayFlatten(arrayMap(m -> arrayMap(i -> m[toUInt8(i)], range(100)),
                                                          [positives_b, negatives_b, positives_c, negatives_c])),
                  []) AS histograms,
               metric.1 AS metric_name, metric.2 AS num_b, metric.3 AS den_b, metric.4 AS num_c, metric.5 AS den_c
        FROM periods
        ARRAY JOIN if(kind = 'regression',
            [('mae', abs_b, n_b, abs_c, n_c),
             ('rmse', sq_b, n_b, sq_c, n_c)],
            arrayConcat(
                [('accuracy', toFloat64(right_b), n_b, toFloat64(right_c), n_c),
                 ('precision', toFloat64(tp_b), toFloat64(pp_b), toFloat64(tp_c), toFloat64(pp_c)),
                 ('recall', toFloat64(tp_b), ap_b, toFloat64(tp_c), ap_c)],
                if(scored, [('auc', auc_b, 1., auc_c, 1.)], []))) AS metric
    )
    WINDOW whole AS (PARTITION BY model_name, model_version, model_stage, label_name, metric_name)
),
tested AS (
    SELECT *, {detector:String} AS fdr_family,
           sw_loss(higher_is_better, value_b, value_c) AS score,
           sw_loss(higher_is_better, sw_metric_value(metric_name, all_num_b, all_den_b),
                   sw_metric_value(metric_name, all_num_c, all_den_c)) AS all_score,
           if(higher_is_better, {threshold:Float64}, {error_threshold:Float64}) AS metric_threshold,
           0.5 * erfc(if(higher_is_better, value_b - value_c, value_c - value_b)
                      / greatest(sqrt(se_b * se_b + se_c * se_c), 1e-12) / sqrt(2)) AS p_value
    FROM (
        SELECT *,
               metric_name NOT IN ('mae', 'rmse') AS higher_is_better,
               sw_metric_value(metric_name, num_b, den_b) AS value_b,
               sw_metric_value(metric_name, num_c, den_c) AS value_c,
               multiIf(
                   metric_name = 'auc', sw_auc_se(value_b, ap_b, n_b - ap_b),
                   metric_name = 'mae', sqrt(greatest(sq_b / n_b - pow(value_b, 2), 0) / n_b),
                   -- delta method: se(sqrt(m)) = se(m) / (2 sqrt(m))
                   metric_name = 'rmse', sqrt(greatest(sq2_b / n_b - pow(num_b / n_b, 2), 0) / n_b)
                                         / greatest(2 * value_b, 1e-12),
                   sqrt(value_b * (1 - value_b) / den_b)) AS se_b,
               multiIf(
                   metric_name = 'auc', sw_auc_se(value_c, ap_c, n_c - ap_c),
                   metric_name = 'mae', sqrt(greatest(sq_c / n_c - pow(value_c, 2), 0) / n_c),
                   metric_name = 'rmse', sqrt(greatest(sq2_c / n_c - pow(num_c / n_c, 2), 0) / n_c)
                                         / greatest(2 * value_c, 1e-12),
                   sqrt(value_c * (1 - value_c) / den_c)) AS se_c
        FROM measured
        WHERE n_b >= {min_support:UInt64} AND n_c >= {min_support:UInt64}
          AND if(metric_name = 'auc', least(ap_b, n_b - ap_b, ap_c, n_c - ap_c),
                 least(den_b, den_c)) >= {min_subset:UInt64}
    )
),
/*@fdr*/
reported AS (
    SELECT *
    FROM (
        SELECT *,
               countIf(is_specific) OVER (PARTITION BY model_name, model_version, model_stage, label_name, metric_name)
                   AS explaining_segments
        FROM (
            SELECT *,
                   segment_dim != '__all__' AND rest_score <= metric_threshold / 3 AS is_specific
            FROM (
                SELECT *,
                       if(metric_name = 'auc',
                          if(least(arraySum(sw_part(rest_histograms, 1)), arraySum(sw_part(rest_histograms, 2)),
                                   arraySum(sw_part(rest_histograms, 3)), arraySum(sw_part(rest_histograms, 4)))
                             < {min_subset:UInt64}
                             OR arraySum(sw_part(rest_histograms, 3)) + arraySum(sw_part(rest_histograms, 4))
                                < all_n_c / 2, inf,
                             sw_histogram_auc(sw_part(rest_histograms, 1), sw_part(rest_histograms, 2))
                             - sw_histogram_auc(sw_part(rest_histograms, 3), sw_part(rest_histograms, 4))),
                          if(rest_den_b < {min_support:UInt64}
                             OR rest_den_c < greatest(toFloat64({min_support:UInt64}), all_den_c / 2), inf,
                             sw_loss(higher_is_better, sw_metric_value(metric_name, rest_num_b, rest_den_b),
                                     sw_metric_value(metric_name, rest_num_c, rest_den_c)))) AS rest_score
                FROM (
                    -- the rest of the dimension: the whole model minus its flagged segments
                    SELECT *,
                           all_num_b - sum(num_b) OVER dimension AS rest_num_b,
                           all_den_b - sum(den_b) OVER dimension AS rest_den_b,
                           all_num_c - sum(num_c) OVER dimension AS rest_num_c,
                           all_den_c - sum(den_c) OVER dimension AS rest_den_c,
                           arrayMap((w, f) -> w - f, all_histograms, sumForEach(histograms) OVER dimension)
                               AS rest_histograms,
                           arraySum(sw_part(all_histograms, 3)) + arraySum(sw_part(all_histograms, 4)) AS all_n_c
                    FROM significant
                    WHERE score > metric_threshold
                    WINDOW dimension AS (PARTITION BY model_name, model_version, model_stage, label_name,
                                                      metric_name, segment_dim)
                )
            )
        )
    )
    WHERE is_specific OR (segment_dim = '__all__' AND explaining_segments = 0)
)
SELECT
    {detector:String} AS detector,
    model_name, model_version, model_stage, segment_dim, segment_value,
    concat(label_name, '.', metric_name) AS quantity,
    {window_start:DateTime('UTC')} AS window_start,
    {window_end:DateTime('UTC')} AS window_end,
    {baseline_start:DateTime('UTC')} AS baseline_start,
    {baseline_end:DateTime('UTC')} AS baseline_end,
    score,
    metric_threshold AS threshold,
    p_value,
    toUInt64(n_c) AS support,
    toUInt64(n_b) AS baseline_support,
    value_b AS baseline_value,
    value_c AS current_value,
    exemplars AS exemplar_trace_ids,
    concat(
        metric_name, ' of ', label_name, if(higher_is_better, ' fell', ' rose'), ' for ',
        if(segment_dim = '__all__', 'the whole model', concat(segment_dim, '=', segment_value)), ': ',
        toString(round(value_c, 4)), ' against ', toString(round(value_b, 4)), ' in the baseline (',
        if(higher_is_better, concat(toString(round(score, 4)), ' lost'),
           concat('+', toString(round(100 * score, 1)), ' %')),
        ', threshold ', toString(metric_threshold),
        if(p_value < 1e-6, ', one-sided z test p < 1e-6',
           concat(', one-sided z test p = ', toString(round(p_value, 6)))), '); ',
        toString(toUInt64(n_c)), ' labelled calls made ', toString({window_start:DateTime('UTC')}), ' to ',
        toString({window_end:DateTime('UTC')}), ' UTC',
        if(segment_dim = '__all__', '',
           concat('; the rest of ', segment_dim, ' held (', toString(round(rest_score, 4)), ')'))
    ) AS details,
    map('baseline', value_b, 'current', value_c, 'se_baseline', se_b, 'se_current', se_c,
        'loss', score, 'fdr_tests', toFloat64(fdr_tests),
        'rest_loss', if(segment_dim = '__all__', nan, rest_score)) AS statistics
FROM reported
ORDER BY score DESC
