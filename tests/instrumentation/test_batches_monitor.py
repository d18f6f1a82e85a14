"""monitor on batches: DataFrames, 2-D arrays, lists of dicts, class probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.instrumentation import monitor


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "amount": rng.lognormal(3, 1, n).round(2),
        "country": rng.choice(["BR", "US", "DE"], n),
        "items": rng.integers(0, 5, n),
    })  # fmt: skip


def test_large_dataframe_becomes_one_columnar_batch_span(recorder) -> None:
    frame = _frame(100)

    @monitor(model="fraud", tracer_provider=recorder.provider)
    def predict(df: pd.DataFrame) -> np.ndarray:
        return (df["amount"] / 100).to_numpy()

    predict(frame)
    (span,) = recorder.spans()
    assert span.attributes["ml.batch.size"] == 100
    assert isinstance(span.attributes["ml.batch.columns"], bytes)
    assert "ml.feature.amount" not in span.attributes
    batch = decode_request(recorder.request())
    assert len(batch) == 100
    _rows, values = batch.quantities["feature.amount"].number_data()
    assert values.tolist() == frame["amount"].tolist()
    _, labels = batch.quantities["feature.country"].label_data()
    assert labels.tolist() == frame["country"].tolist()
    _, predictions = batch.quantities["output.prediction"].number_data()
    assert predictions == pytest.approx((frame["amount"] / 100).tolist())


def test_small_2d_array_becomes_plain_arrays(recorder) -> None:
    @monitor(model="m", feature_names=["a", "b"], tracer_provider=recorder.provider)
    def predict(x: np.ndarray) -> np.ndarray:
        return x.sum(axis=1)

    predict(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    (span,) = recorder.spans()
    assert span.attributes["ml.batch.size"] == 3
    assert span.attributes["ml.feature.a"] == (1.0, 3.0, 5.0)
    assert span.attributes["ml.output.prediction"] == (3.0, 7.0, 11.0)


def test_list_of_dicts_with_missing_keys(recorder) -> None:
    @monitor(model="m", tracer_provider=recorder.provider)
    def predict(rows: list[dict]) -> list[float]:
        return [1.0 for _ in rows]

    predict([{"a": 1, "b": "x"}, {"a": 2}])
    (span,) = recorder.spans()
    assert span.attributes["ml.feature.b"] == ("x", None)
    batch = decode_request(recorder.request())
    rows, _ = batch.quantities["feature.b"].label_data()
    assert rows.tolist() == [0]  # the second row's b is MISSING


def test_estimator_method_uses_feature_names_in_and_classes(recorder) -> None:
    class Estimator:
        feature_names_in_ = np.array(["x1", "x2"])
        classes_ = np.array(["cat", "dog", "eel"])

        @monitor(model="animals", operation="predict_proba", tracer_provider=recorder.provider)
        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])

    Estimator().predict_proba(np.array([[1.0, 2.0], [3.0, 4.0]]))
    (span,) = recorder.spans()
    assert span.name == "predict_proba animals"
    assert span.attributes["ml.feature.x1"] == (1.0, 3.0)
    assert span.attributes["ml.output.label"] == ("dog", "cat")
    assert span.attributes["ml.metric.confidence"] == (0.7, 0.6)


def test_single_row_probabilities(recorder) -> None:
    @monitor(model="m", classes=[0, 1], tracer_provider=recorder.provider)
    def predict_proba(row: dict) -> np.ndarray:
        return np.array([[0.2, 0.8]])

    predict_proba({"a": 1.0})
    (span,) = recorder.spans()
    assert span.attributes["ml.output.label"] == 1
    assert span.attributes["ml.metric.confidence"] == 0.8


def test_full_probability_vector_on_request(recorder) -> None:
    @monitor(model="m", classes=["no", "yes"], record_probabilities=True,
             tracer_provider=recorder.provider)  # fmt: skip
    def predict_proba(rows: list[dict]) -> np.ndarray:
        return np.array([[0.9, 0.1], [0.3, 0.7]])

    predict_proba([{"a": 1}, {"a": 2}])
    (span,) = recorder.spans()
    assert span.attributes["ml.output.label"] == ("no", "yes")
    assert span.attributes["ml.output.proba_yes"] == (0.1, 0.7)
    assert span.attributes["ml.output.proba_no"] == (0.9, 0.3)


def test_per_row_option_records_one_span_per_row(recorder) -> None:
    @monitor(model="m", per_row=True, tracer_provider=recorder.provider)
    def predict(df: pd.DataFrame) -> np.ndarray:
        return np.arange(len(df), dtype=float)

    predict(_frame(4))
    spans = recorder.spans()
    rows = [s for s in spans if "ml.model.name" in s.attributes]
    parents = [s for s in spans if "ml.model.name" not in s.attributes]
    assert len(rows) == 4 and len(parents) == 1
    assert [s.attributes["ml.output.prediction"] for s in rows] == [0.0, 1.0, 2.0, 3.0]
    assert all(s.parent.span_id == parents[0].context.span_id for s in rows)
    batch = decode_request(recorder.request())
    assert len(batch) == 4


def test_batch_features_are_kept_when_the_model_raises(recorder) -> None:
    @monitor(model="m", tracer_provider=recorder.provider)
    def predict(df: pd.DataFrame) -> None:
        raise RuntimeError("model down")

    with pytest.raises(RuntimeError):
        predict(_frame(5))
    (span,) = recorder.spans()
    assert span.attributes["ml.batch.size"] == 5
    assert len(span.attributes["ml.feature.amount"]) == 5
    assert "ml.output.prediction" not in span.attributes


def _one_minute(batch):  # type: ignore[no-untyped-def]
    """Single calls may straddle a minute boundary; pin them all to one minute."""
    batch.start_ns = [1_800_000_000 * 10**9] * len(batch)
    return batch


@pytest.mark.parametrize("n", [20, 200])  # plain arrays and ml.batch.columns
def test_batch_through_monitor_aggregates_like_single_calls(recorder, n: int) -> None:
    frame = _frame(n, seed=3)
    model = monitor(model="fraud", tracer_provider=recorder.provider)
    predict = model(lambda df: (df["amount"] > 30).to_numpy())
    predict(frame)
    batched = SegmentAggregator().aggregate(_one_minute(decode_request(recorder.request())))
    single = model(lambda row: row["amount"] > 30)
    for record in frame.to_dict("records"):
        single(record)
    singles = SegmentAggregator().aggregate(_one_minute(decode_request(recorder.request())))

    def states(rows):  # type: ignore[no-untyped-def]
        """Every aggregate row as a sortable tuple (maps as sorted pairs, floats rounded)."""
        out = []
        for i in range(len(rows)):
            row = []
            for name, values in rows.columns.items():
                value = values[i]
                if name == "exemplar_trace_ids":
                    continue  # different spans, different trace ids
                if isinstance(value, dict):
                    value = tuple(sorted(value.items()))
                elif isinstance(value, float):
                    value = round(value, 9)
                row.append((name, value))
            out.append(tuple(row))
        return sorted(out)

    assert states(batched) == states(singles)
