-- The rows a run reads (a fragment: the manifest puts it at the detector's
-- rolled_up marker, in its WITH list): the current window from the 5-minute
-- roll-up; the baseline [baseline_start, baseline_end) from the 1-hour roll-up
-- for its whole hours and the 5-minute one for the rest, so a day of baseline is
-- 24 rows per segment and quantity, not 1,440 (see segwatch.clickhouse.rollups,
-- which the runner calls first).
-- A row whose maps (histogram, categories) are read: true, or the query stops if the
-- row was rolled up without them (maps = 0: its detector's SQL did not say it reads them,
-- `-- segwatch: reads the roll-ups' maps of ...`, and the runner did not roll them up;
-- or another run rolled them up again without, after this run's roll-up: the runner
-- then rolls them up once more and runs the query again, see
-- segwatch.clickhouse.detection). The message is how the runner knows this error.
-- `cond AND sw_maps_read(maps)` checks only the rows `cond` selects: detector queries
-- run with short_circuit_function_evaluation = 'enable' (store.DETECTOR_SETTINGS).
(maps) -> NOT throwIf(maps = 0, 'a roll-up row read without its histogram and categories: its detector''s SQL must say it reads them, in a line `-- segwatch: reads the roll-ups'' maps of window|all`') AS sw_maps_read,
toStartOfHour({baseline_start:DateTime('UTC')} + INTERVAL 3599 SECOND) AS sw_hours_start,
toStartOfHour({baseline_end:DateTime('UTC')}) AS sw_hours_end,
rolled_up AS (
    SELECT * FROM ml_segment_rollup_5m FINAL
    WHERE (bucket_start >= {window_start:DateTime('UTC')} AND bucket_start < {window_end:DateTime('UTC')})
       OR (bucket_start >= {baseline_start:DateTime('UTC')} AND bucket_start < {baseline_end:DateTime('UTC')}
           AND (bucket_start < sw_hours_start OR bucket_start >= sw_hours_end))
    UNION ALL
    SELECT * FROM ml_segment_rollup_1h FINAL
    WHERE bucket_start >= sw_hours_start AND bucket_start < sw_hours_end
      AND bucket_start >= {baseline_start:DateTime('UTC')} AND bucket_start < {baseline_end:DateTime('UTC')}
),
