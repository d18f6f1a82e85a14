-- Settings that every writer of this store must share. histogram_accuracy:
-- histograms of different relative accuracies have different keys and cannot
-- be merged, so the first collector records its accuracy and the others (and
-- later runs) must use the same one.
CREATE TABLE IF NOT EXISTS ml_store_settings
(
    name LowCardinality(String) COMMENT 'Setting name, e.g. histogram_accuracy',
    value String COMMENT 'Its value, as text',
    set_at DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'When it was recorded'
)
ENGINE = ReplacingMergeTree(set_at)
ORDER BY name
COMMENT 'segwatch: store-wide settings every collector must agree on';

ALTER TABLE ml_segment_aggregates COMMENT COLUMN histogram 'Weighted log-bucketed histogram of the finite numeric values, relative accuracy a = ml_store_settings.histogram_accuracy (default 0.01): key k = sign(x) * (ceil(ln|x| / ln((1+a)/(1-a))) + 16384), clamped to [1, 32767]; 0 for x = 0. See segwatch.collector.histogram';
ALTER TABLE ml_baseline_aggregates COMMENT COLUMN histogram 'Log-bucketed histogram, keys and accuracy as in ml_segment_aggregates';
