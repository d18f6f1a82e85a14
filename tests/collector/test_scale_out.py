"""Scale-out proof: two collectors fed disjoint halves of one stream, writing to one
store, give after ClickHouse merges exactly the aggregates of one collector fed all.

Both collectors run in this process on the same embedded store (chdb lets one
process open one store directory through several clients); each has its own
receiver, aggregator and exporter, as two collector processes in front of one
ClickHouse server would.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from waiting import wait_until

from segwatch.collector.cli.demo import service_tracer_provider
from segwatch.collector.config import (
    ApiConfig,
    CollectorConfig,
    ReceiverConfig,
    SchedulerConfig,
    SpoolConfig,
    StorageConfig,
)
from segwatch.collector.service.collector import Collector
from segwatch.instrumentation import monitor

# Recent and on the hour: the collector refuses spans older than its lateness or from the future.
START_NS = (int(time.time()) // 3600 * 3600 - 3 * 3600) * 10**9

AGGREGATES = (
    "SELECT model_name, bucket_start, segment_dim, segment_value, quantity, "
    "sum(count), sum(sampled), sum(missing), sum(numeric_count), round(sum(sum), 6), "
    "round(sum(sum_sq), 3), min(min), max(max), sumMap(histogram), sumMap(categories) "
    "FROM ml_segment_aggregates GROUP BY ALL ORDER BY ALL"
)


def _calls(n: int) -> list[dict]:
    rng = random.Random(21)
    return [
        {
            "at": START_NS + i * 97_000_000,  # spread over ~5 minutes
            "amount": None if rng.random() < 0.05 else round(rng.lognormvariate(3, 1), 2),
            "country": rng.choice(["BR", "US", "DE", "FR"]),
            "score": round(rng.random(), 3),
        }
        for i in range(n)
    ]


def _collector(dsn: str, spool: Path) -> Collector:
    """A collector with a spool of its own, as every instance of a scale-out has."""
    return Collector(CollectorConfig(
        storage=StorageConfig(dsn=dsn, spool=SpoolConfig(path=str(spool))),
        receiver=ReceiverConfig(endpoint="127.0.0.1:0"),
        api=ApiConfig(endpoint="127.0.0.1:0"),
        scheduler=SchedulerConfig(enabled=False),
    ))  # fmt: skip


def _send(collector: Collector, calls: list[dict]) -> None:
    assert collector.receiver is not None
    provider = service_tracer_provider(collector.receiver.address, "scale-out")
    model = monitor("fraud", version="1", tracer_provider=provider)
    for call in calls:
        with model.call(start_time=call["at"], end_time=call["at"] + 1) as c:
            c.features(amount=call["amount"], country=call["country"])
            c.outputs(score=call["score"])
    provider.shutdown()


def _merged_aggregates(collector: Collector) -> list[tuple]:
    client = collector._clients.api  # type: ignore[union-attr]
    client.command("OPTIMIZE TABLE ml_segment_aggregates FINAL")
    return list(client.query(AGGREGATES).result_rows)


def test_two_collectors_on_halves_equal_one_on_everything(tmp_path: Path) -> None:
    calls = _calls(3_000)
    shared = f"chdb://{tmp_path / 'shared'}"
    first, second = (
        _collector(shared, tmp_path / "spool-1"),
        _collector(shared, tmp_path / "spool-2"),
    )
    first.start()
    second.start()
    try:
        _send(first, calls[0::2])  # disjoint halves, interleaved in time
        _send(second, calls[1::2])
        wait_until(
            lambda: (
                first.processor.stats.model_calls  # type: ignore[union-attr]
                + second.processor.stats.model_calls
                >= len(calls)
            )
        )  # type: ignore[union-attr]
        first.flush()
        second.flush()
        two = _merged_aggregates(first)
    finally:
        second.shutdown()
        first.shutdown()

    single = _collector(f"chdb://{tmp_path / 'single'}", tmp_path / "spool-single")
    single.start()
    try:
        _send(single, calls)
        wait_until(lambda: single.processor.stats.model_calls >= len(calls))  # type: ignore[union-attr]
        single.flush()
        one = _merged_aggregates(single)
    finally:
        single.shutdown()
    assert len(one) > 100
    assert two == one
