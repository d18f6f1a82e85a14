-- 5-minute buckets that got minute rows after they ended. The detector runner
-- rolls a bucket up once more after it settles (segwatch.clickhouse.rollups), and
-- until now that roll-up stood for good: calls that reached ml_segment_aggregates
-- later (a store outage's spooled backlog, an SDK's retries, a backfill of
-- history) never reached the detectors. A writer that inserts such rows marks
-- their buckets here once they landed; a roll-up of a marked bucket made before
-- the mark is stale, and the next run that reads the bucket rolls it up again
-- (the 1-hour bucket around it too). The latest mark of a bucket counts (a
-- few rows per late flush: kept as they are, read with max(marked_at)); marks
-- age out with the aggregates (storage.retention.aggregates).
CREATE TABLE IF NOT EXISTS ml_late_buckets
(
    bucket_start DateTime('UTC') COMMENT 'Start of a 5-minute bucket that got minute rows after it ended',
    marked_at DateTime64(3, 'UTC') COMMENT 'When they had landed (the writer''s clock): the bucket''s roll-ups made before are stale'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(bucket_start)
ORDER BY bucket_start
COMMENT 'segwatch: 5-minute buckets that got calls late; their roll-ups made before are rolled up again';
