"""Aggregation against a naive computation, and its merge property."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from segwatch.collector.aggregate.aggregator import AggregateRows, SegmentAggregator
from segwatch.collector.aggregate.histogram import GAMMA, bucket_value, histogram_keys
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.instrumentation import monitor

KEY = ("model_name", "model_version", "model_stage", "bucket_start", "segment_dim",
       "segment_value", "quantity")  # fmt: skip


def _send(recorder, rows: list[dict], start: int = 1_700_000_000) -> None:
    m = monitor(model="fraud", version="1", tracer_provider=recorder.provider)
    for i, row in enumerate(rows):
        at = (start + i) * 1_000_000_000
        with m.call(start_time=at, end_time=at + 1) as call:
            call.features(**{k: v for k, v in row.items() if k != "score"})
            if row.get("score") is not None:
                call.outputs(score=row["score"])


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "amount": None if rng.random() < 0.1 else round(rng.lognormvariate(3, 1), 2),
            "country": rng.choice(["BR", "US", "DE", None]),
            "score": rng.random() if rng.random() < 0.9 else None,
        }
        for _ in range(n)
    ]


def _by_key(rows: AggregateRows) -> dict[tuple, dict]:
    out = {}
    for i in range(len(rows)):
        key = tuple(rows.columns[k][i] for k in KEY)
        assert key not in out
        out[key] = {name: values[i] for name, values in rows.columns.items()}
    return out


def _merge(a: dict, b: dict) -> dict:
    """Merge two states the way ClickHouse does (sum, min, max, sumMap)."""
    out = dict(a)
    for name in ("count", "missing", "numeric_count", "sum", "sum_sq"):
        out[name] = a[name] + b[name]
    out["min"], out["max"] = min(a["min"], b["min"]), max(a["max"], b["max"])
    for name in ("histogram", "categories"):
        out[name] = dict(Counter(a[name]) + Counter(b[name]))
    return out


def test_aggregates_match_a_naive_computation(recorder) -> None:
    rows = _rows(300, seed=1)
    _send(recorder, rows)
    out = _by_key(SegmentAggregator().aggregate(decode_request(recorder.request())))
    # Naive: per minute and country, the amount statistics.
    expected: dict[tuple, list] = defaultdict(list)
    for i, row in enumerate(rows):
        minute = (1_700_000_000 + i) // 60 * 60
        expected[(minute, row["country"] or "MISSING")].append(row["amount"])
    for (minute, country), amounts in expected.items():
        state = out[("fraud", "1", "serving", minute, "feature.country", country, "feature.amount")]
        present = [a for a in amounts if a is not None]
        assert state["count"] == len(amounts)
        assert state["missing"] == len(amounts) - len(present)
        assert state["numeric_count"] == len(present)
        assert state["sum"] == pytest.approx(sum(present))
        assert state["sum_sq"] == pytest.approx(sum(a * a for a in present))
        if present:
            assert (state["min"], state["max"]) == (min(present), max(present))
        assert sum(state["histogram"].values()) == len(present)
    # The whole-model segment counts every call once per minute.
    totals = Counter((1_700_000_000 + i) // 60 * 60 for i in range(len(rows)))
    for minute, n in totals.items():
        state = out[("fraud", "1", "serving", minute, "__all__", "__all__", "feature.country")]
        assert state["count"] == n
        assert sum(state["categories"].values()) == n - state["missing"]


def test_quantities_summed_on_threads_give_the_same_rows(recorder) -> None:
    """A backfill's aggregator sums a batch's quantities on two threads: same rows, same order."""
    _send(recorder, _rows(400, seed=3))
    batch = decode_request(recorder.request())
    alone = SegmentAggregator().aggregate(batch)
    with ThreadPoolExecutor(max_workers=2) as executor:
        threaded = SegmentAggregator(executor=executor).aggregate(batch)
    assert len(alone) > 0 and alone.native() == threaded.native()


def test_merge_of_two_halves_equals_the_whole(recorder) -> None:
    rows = _rows(240, seed=2)
    aggregator = SegmentAggregator()
    _send(recorder, rows)
    whole = _by_key(aggregator.aggregate(decode_request(recorder.request())))
    _send(recorder, rows[:100])
    first = _by_key(aggregator.aggregate(decode_request(recorder.request())))
    _send(recorder, rows[100:], start=1_700_000_000 + 100)
    second = _by_key(aggregator.aggregate(decode_request(recorder.request())))
    merged = dict(first)
    for key, state in second.items():
        merged[key] = _merge(merged[key], state) if key in merged else state
    assert merged.keys() == whole.keys()
    for key, state in whole.items():
        got = merged[key]
        for name in ("count", "missing", "numeric_count", "min", "max", "histogram", "categories"):
            assert got[name] == state[name], (key, name)
        assert got["sum"] == pytest.approx(state["sum"])


def test_histogram_keys_are_within_relative_accuracy() -> None:
    values = np.array([1e-6, 0.5, 1.0, 3.3, 1234.5, -7.0, 0.0, 1e30], dtype=np.float64)
    keys = histogram_keys(values)
    assert keys.dtype == np.int16
    for value, key in zip(values.tolist(), keys.tolist(), strict=True):
        represented = bucket_value(key)
        if value == 0:
            assert key == 0
        else:
            assert math.copysign(1, represented) == math.copysign(1, value)
            assert abs(represented - value) <= (GAMMA - 1) * abs(value)


def test_infinities_are_counted_as_categories_and_nan_is_missing(recorder) -> None:
    _send(recorder, [{"amount": math.nan}, {"amount": math.inf}, {"amount": 2.0}])
    out = _by_key(SegmentAggregator().aggregate(decode_request(recorder.request())))
    state = next(v for k, v in out.items() if k[4] == "__all__" and k[6] == "feature.amount")
    assert state["numeric_count"] == 1
    assert state["categories"] == {"inf": 1}
    assert state["missing"] == 1  # NaN: MISSING, as an omitted attribute
