-- The histogram column's comment named segwatch.collector.histogram, the module that
-- computes its keys; since the collector was cut by pipeline stage it is
-- segwatch.collector.aggregate.histogram. A comment only: no data is touched.
ALTER TABLE ml_segment_aggregates COMMENT COLUMN histogram 'Weighted log-bucketed histogram of the finite numeric values, relative accuracy a = ml_store_settings.histogram_accuracy (default 0.01): key k = sign(x) * (ceil(ln|x| / ln((1+a)/(1-a))) + 16384), clamped to [1, 32767]; 0 for x = 0. See segwatch.collector.aggregate.histogram';
