"""Synthetic traffic for detector tests: a shop model whose color mix may shift.

75 minutes of calls (one every 3 s) ending at ``END``; the last 15 minutes use
``color_weights_now``, the hour before ``[0.5, 0.3, 0.2]``. ``size`` never shifts.
"""

from __future__ import annotations

import random

import numpy as np

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import monitor

END = 1_800_000_000 - 1_800_000_000 % 300  # a 5-minute boundary


def ingest(client, recorder, rows: list[tuple[int, dict]]) -> None:
    m = monitor(model="shop", version="1", tracer_provider=recorder.provider)
    for at, features in rows:
        with m.call(start_time=at * 1_000_000_000, end_time=at * 1_000_000_000 + 1) as call:
            call.features(**features)
    store_recorded(client, recorder)


def store_recorded(client, recorder) -> None:  # type: ignore[no-untyped-def]
    """Aggregate the calls the recorder holds and store them (as a collector flush would)."""
    exporter = ClickHouseExporter(client)
    exporter.start()
    try:
        batch = decode_request(recorder.request())
        exporter.submit(SegmentAggregator().aggregate(batch)).result(timeout=30)
    finally:
        exporter.shutdown()


def traffic(seed: int, color_weights_now: list[float]) -> tuple[list, np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    colors = ["red", "green", "blue"]
    rows, before, now = [], np.zeros(3), np.zeros(3)
    for second in range(END - 75 * 60, END):
        if second % 3:
            continue
        current = second >= END - 15 * 60
        weights = color_weights_now if current else [0.5, 0.3, 0.2]
        color = rng.choices(range(3), weights)[0]
        (now if current else before)[color] += 1
        rows.append((second, {"color": colors[color], "size": rng.choice(["S", "M", "L"])}))
    return rows, before, now


def ingest_color_shift(client, recorder) -> int:  # type: ignore[no-untyped-def]
    """Store traffic whose color mix shifts in the last 15 minutes; return ``END``."""
    rows, _, _ = traffic(seed=3, color_weights_now=[0.2, 0.3, 0.5])
    ingest(client, recorder, rows)
    return END
