-- Roll-up rows without their histogram and categories. Of a run's detectors only
-- the distribution ones read the maps of every segment, and only over their short
-- windows; the others read counts and sums over hours. Summing the maps is most of a
-- roll-up's cost, so the runner rolls older buckets up without them (the whole
-- model's rows keep theirs) and marks those rows: a reader that needs a row's maps
-- finds maps = 0 there, never an empty map that reads as "no values", and the runner
-- rolls such a bucket up again, maps included, before a detector that needs them
-- reads it (segwatch.clickhouse.rollups). Rows rolled up before this migration hold
-- their maps: 1.
ALTER TABLE ml_segment_rollup_5m
    ADD COLUMN IF NOT EXISTS maps UInt8 DEFAULT 1
    COMMENT '1: histogram and categories hold the bucket''s values; 0: rolled up without them (left empty), to be rolled up again by a detector that reads them';

ALTER TABLE ml_segment_rollup_1h
    ADD COLUMN IF NOT EXISTS maps UInt8 DEFAULT 1
    COMMENT '1: histogram and categories hold the bucket''s values; 0: rolled up without them (left empty), to be rolled up again by a detector that reads them';
