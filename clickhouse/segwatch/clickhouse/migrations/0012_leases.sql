-- The table of claims and leases (segwatch.clickhouse.lease): each detector
-- window claimed once across collectors, one migration runner at a time.
-- segwatch.clickhouse.lease creates it with this very statement (read from this
-- file) before any migration runs, since the migrations' own lease lives in it;
-- this migration makes sure a store migrated before the table existed gets it
-- from `segwatch migrate`, so that collectors, whose users need no CREATE TABLE
-- grant, find it when they claim. On a store that has it, nothing changes.
-- The deduplication window of 100 000 inserts is three weeks of twenty detectors
-- on a 5-minute cadence: only claims made at about the same time need to meet in
-- it; later ones find the row.
CREATE TABLE IF NOT EXISTS segwatch_leases
(
    key String COMMENT 'What was claimed: claim:<key> once, or lease:<name>:<generation>',
    lease String DEFAULT '' COMMENT 'The lease a generation belongs to; empty for a one-time claim',
    generation UInt64 DEFAULT 0 COMMENT 'The lease generation; 0 for a one-time claim',
    holder String COMMENT 'Who claimed it: host, process id and a tag per claimant',
    claimed_at DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'When, on the store''s clock',
    lease_ms UInt64 DEFAULT 0 COMMENT 'How long a generation lasts from claimed_at (0: released)'
)
ENGINE = MergeTree ORDER BY key
TTL toDateTime(claimed_at) + INTERVAL 90 DAY WHERE lease = ''
SETTINGS non_replicated_deduplication_window = 100000
COMMENT 'segwatch: one-time claims and leases; insert deduplication picks each key''s one holder';
