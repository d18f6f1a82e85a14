"""Quantile buckets from a baseline profile: declared `quantiles: N`, and zero config."""

from __future__ import annotations

import numpy as np

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config import parse_config
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.profile.profiles import load_profile, refresh_quantile_buckets
from segwatch.collector.segment.buckets import EdgeBuckets, LogBuckets
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.instrumentation import monitor


def _training(n: int = 5000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {"amount": rng.lognormal(4, 1, n), "age": rng.uniform(18, 90, n),
            "score_hint": rng.normal(0, 1, n)}  # fmt: skip


def test_zero_config_features_switch_to_baseline_deciles(client, recorder) -> None:
    load_profile(client, _training(), model="shop")
    plan = SegmentationPlan()
    assert isinstance(plan.buckets("shop", "feature.amount"), LogBuckets)
    assert refresh_quantile_buckets(client, plan) == 3
    buckets = plan.buckets("shop", "feature.amount")
    assert isinstance(buckets, EdgeBuckets) and len(buckets.edges) == 9
    # Live data from the training distribution spreads evenly over the deciles.
    model = monitor("shop", tracer_provider=recorder.provider)
    rng = np.random.default_rng(3)
    for amount in rng.lognormal(4, 1, 2000).tolist():
        with model.call(start_time=10**18, end_time=10**18 + 1) as call:
            call.features(amount=amount)
            call.outputs(score=0.5)
    rows = SegmentAggregator(plan).aggregate(decode_request(recorder.request()))
    c = rows.columns
    per_segment = {
        c["segment_value"][i]: c["count"][i]
        for i in range(len(rows))
        if c["segment_dim"][i] == "feature.amount" and c["quantity"][i] == "output.score"
    }
    assert len(per_segment) == 10  # 9 edges: 10 buckets, each hit
    assert all(120 < n < 280 for n in per_segment.values()), per_segment  # ~200 each
    assert sum(per_segment.values()) == 2000


def test_declared_buckets_are_kept_and_quantiles_count_is_honoured(client) -> None:
    config = parse_config(
        "models:\n  shop:\n    features:\n"
        "      amount: {type: number, segments: {log: {base: 2}}}\n"
        "      age: {type: number, segments: {quantiles: 4}}\n"
    )  # fmt: skip
    load_profile(client, _training(), model="shop", config=config)  # bucketed as live will be
    plan = SegmentationPlan(config)
    refresh_quantile_buckets(client, plan)
    assert isinstance(plan.buckets("shop", "feature.amount"), LogBuckets)  # declared: kept
    age = plan.buckets("shop", "feature.age")
    assert isinstance(age, EdgeBuckets) and len(age.edges) == 3
    assert np.allclose(age.edges.tolist(), [36, 54, 72], rtol=0.05)  # uniform 18..90


def test_collector_starts_with_the_profile_quantiles(tmp_path) -> None:
    from segwatch.clickhouse.migrate import apply_migrations
    from segwatch.clickhouse.store import open_client, parse_dsn
    from segwatch.collector.config import (
        ApiConfig,
        CollectorConfig,
        ReceiverConfig,
        SchedulerConfig,
        StorageConfig,
    )  # fmt: skip
    from segwatch.collector.service.collector import Collector

    dsn = f"chdb://{tmp_path / 'store'}"
    client = open_client(parse_dsn(dsn))
    apply_migrations(client)
    load_profile(client, _training(), model="shop")
    client.close()
    collector = Collector(CollectorConfig(
        storage=StorageConfig(dsn=dsn), receiver=ReceiverConfig(endpoint="127.0.0.1:0"),
        api=ApiConfig(endpoint="127.0.0.1:0"), scheduler=SchedulerConfig(enabled=False),
    ))  # fmt: skip
    collector.start()
    try:
        assert isinstance(collector.plan.buckets("shop", "feature.age"), EdgeBuckets)
    finally:
        collector.shutdown()
