-- The minute aggregates ordered by 5-minute slice before quantity and segment,
-- so that rolling up the newest minutes for the detectors reads those minutes,
-- not the bucket_start column of the whole month (0001 ordered the time last:
-- fine for one segment's series, a full scan for "every segment, last 5 minutes").
-- The table is rebuilt and swapped in: copy, EXCHANGE, drop the old one.
CREATE TABLE IF NOT EXISTS ml_segment_aggregates_by_time AS ml_segment_aggregates
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket_start)
ORDER BY (model_name, model_stage, model_version, toStartOfFiveMinutes(bucket_start),
          quantity, segment_dim, segment_value, bucket_start)
SETTINGS non_replicated_deduplication_window = 10000
COMMENT 'segwatch: per-segment aggregates per model, version, stage, minute and quantity';

-- A rerun after a crash mid-way starts the copy again from an empty table; after
-- a crash between EXCHANGE and DROP, the rerun keeps every row but swaps the old
-- order back in (the rows are right; only reading the newest minutes is slower).
-- Deduplication tokens recorded by the old table do not carry over: a collector
-- replaying an interrupted flush right across this upgrade could write it twice.
TRUNCATE TABLE ml_segment_aggregates_by_time;

INSERT INTO ml_segment_aggregates_by_time SELECT * FROM ml_segment_aggregates;

EXCHANGE TABLES ml_segment_aggregates AND ml_segment_aggregates_by_time;

DROP TABLE ml_segment_aggregates_by_time;
