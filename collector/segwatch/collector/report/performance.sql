-- Label-based performance of one model over time, for the report: per {step} seconds
-- of the calls' time and per label the config declares ({labels}: the performance
-- detector's lines, model<TAB>label<TAB>kind<TAB>prediction<TAB>score<TAB>positive<TAB>
-- threshold), the labelled calls and their accuracy (classification: the predicted
-- class is the prediction output, or score >= threshold, as performance.sql says) or
-- their mean absolute error (regression). Parameters: model, labels, start, end, step.
WITH
arrayMap(line -> splitByChar('\t', line),
         arrayFilter(line -> line != '', splitByChar('\n', {labels:String}))) AS tasks,
(strings, numbers, key) -> if(mapContains(strings, key), strings[key],
                              if(mapContains(numbers, key), toString(numbers[key]), '')) AS sw_text_of
SELECT label_name, kind, t, count() AS labelled,
       if(kind = 'regression', avg(abs(error)), avg(predicted = truth)) AS value
FROM (
    SELECT task[2] AS label_name, task[3] AS kind,
           toStartOfInterval(c.timestamp, toIntervalSecond({step:UInt32}), 'UTC') AS t,
           sw_text_of(l.strings, l.numbers, task[2]) AS truth,
           if(task[4] != '', sw_text_of(c.strings, c.numbers, task[4]),
              if(c.numbers[task[5]] >= toFloat64OrZero(task[7]), task[6],
                 if(truth != task[6], truth, concat('not ', task[6])))) AS predicted,
           c.numbers[task[4]] - l.numbers[task[2]] AS error
    FROM ml_model_calls AS c
    INNER JOIN (SELECT model_name, prediction_id, strings, numbers FROM ml_labels FINAL
                WHERE model_name = {model:String}) AS l
        ON c.model_name = l.model_name AND c.prediction_id = l.prediction_id
    ARRAY JOIN arrayFilter(x -> length(x) = 7 AND x[1] = {model:String}, tasks) AS task
    WHERE c.model_name = {model:String} AND c.prediction_id != ''
      AND c.timestamp >= {start:DateTime('UTC')} AND c.timestamp < {end:DateTime('UTC')}
)
WHERE truth != ''
GROUP BY label_name, kind, t
ORDER BY label_name, t
