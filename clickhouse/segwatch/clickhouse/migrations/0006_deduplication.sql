-- Idempotent inserts. The collector tags each flush of its spool with a
-- deduplication token; after a crash it replays an interrupted flush with the
-- same token, and ClickHouse drops the insert if the first attempt had landed.
-- Replicated tables deduplicate by default; plain MergeTree needs a window.
ALTER TABLE ml_segment_aggregates MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE ml_model_calls MODIFY SETTING non_replicated_deduplication_window = 10000;
