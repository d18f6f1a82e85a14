"""Property tests: aggregation merges exactly, and histogram quantiles keep their accuracy."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.aggregate.histogram import RELATIVE_ACCURACY, bucket_value, histogram_keys
from segwatch.collector.config import parse_config
from segwatch.collector.model_calls import Column, ModelCallBatch
from segwatch.collector.segment.plan import SegmentationPlan

values = st.one_of(
    st.none(),
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
    st.sampled_from(["BR", "US", "DE"]),
)
rows = st.lists(st.tuples(st.integers(0, 3), values, values), min_size=1, max_size=60)


def _batch(data: list[tuple[int, object, object]]) -> ModelCallBatch:
    """Calls of one model: minute, feature x, feature y (None = MISSING)."""
    batch = ModelCallBatch(models=[("m", "1", "serving")])
    for name in ("feature.x", "feature.y"):
        batch.quantities[name] = Column()
    for row, (minute, x, y) in enumerate(data):
        batch.model_index.append(0)
        batch.start_ns.append(1_800_000_000 * 10**9 + minute * 60 * 10**9)
        batch.trace_ids.append(bytes(16))
        batch.weights.append(1.0)
        for name, value in (("feature.x", x), ("feature.y", y)):
            column = batch.quantities[name]
            if isinstance(value, float):
                column.number_rows.append(row)
                column.numbers.append(value)
            elif isinstance(value, str):
                column.label_rows.append(row)
                column.labels.append(value)
    return batch


# The merge property holds for the fields a model is known to have: declared
# here, as a collector would have them from its config (or from earlier batches).
PLAN = SegmentationPlan(parse_config("models:\n  m:\n    features: {x: {}, y: {}}\n"))


def _states(batch: ModelCallBatch) -> dict[tuple, dict]:
    out = SegmentAggregator(PLAN).aggregate(batch)
    c = out.columns
    keys = ("bucket_start", "segment_dim", "segment_value", "quantity")
    return {
        tuple(c[k][i] for k in keys): {
            k: c[k][i] for k in c if k not in (*keys, "exemplar_trace_ids")
        }
        for i in range(len(out))
    }


def _merge(a: dict, b: dict) -> dict:
    merged = dict(a)
    for name in ("count", "sampled", "missing", "numeric_count", "sum", "sum_sq"):
        merged[name] = a[name] + b[name]
    merged["min"], merged["max"] = min(a["min"], b["min"]), max(a["max"], b["max"])
    for name in ("histogram", "categories"):
        merged[name] = dict(Counter(a[name]) + Counter(b[name]))
    for name in ("model_name", "model_version", "model_stage"):
        merged[name] = a[name]
    return merged


@settings(max_examples=150, deadline=None)
@given(first=rows, second=rows)
def test_merge_of_aggregates_equals_aggregate_of_union(first, second) -> None:
    whole = _states(_batch(first + second))
    merged = dict(_states(_batch(first)))
    for key, state in _states(_batch(second)).items():
        merged[key] = _merge(merged[key], state) if key in merged else state
    assert merged.keys() == whole.keys()
    for key, state in whole.items():
        got = merged[key]
        for name in ("count", "sampled", "missing", "numeric_count", "min", "max",
                     "histogram", "categories"):  # fmt: skip
            assert got[name] == state[name], (key, name)
        assert np.isclose(got["sum"], state["sum"], rtol=1e-9, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-6, max_value=1e12), min_size=1, max_size=400),
    st.floats(min_value=0.01, max_value=0.99),
    st.sampled_from([0.001, RELATIVE_ACCURACY, 0.05, 0.2]),  # storage.histogram_accuracy
)
def test_histogram_quantiles_are_within_the_relative_accuracy(data, q, accuracy) -> None:
    values = np.asarray(data)
    keys, counts = np.unique(histogram_keys(values, accuracy), return_counts=True)
    rank = q * (len(values) - 1)  # the lower-rank quantile, as numpy's "lower" method
    index = int(np.searchsorted(np.cumsum(counts), int(rank) + 1))
    estimate = bucket_value(int(keys[index]), accuracy)
    truth = float(np.quantile(values, q, method="lower"))
    assert abs(estimate - truth) <= accuracy * truth * 1.0000001
