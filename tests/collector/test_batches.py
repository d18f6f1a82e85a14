"""Batch spans: plain arrays and ml.batch.columns give the same rows as single calls."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.decode.batch_columns import BatchColumnsError, decode_columns
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.instrumentation import monitor
from segwatch.instrumentation.batch_columns import encode_columns

START = 1_800_000_000 * 10**9


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "feature.amount": None if rng.random() < 0.1 else round(rng.lognormvariate(3, 1), 2),
            "feature.country": rng.choice(["BR", "US", "DE", None]),
            "feature.items": rng.randint(0, 5),
            "feature.returning": rng.random() < 0.5,
            "output.score": rng.random(),
            "metric.confidence": math.nan if rng.random() < 0.05 else rng.random(),
        }
        for _ in range(n)
    ]


def _single_calls(recorder, rows: list[dict]) -> None:
    model = monitor("shop", version="1", tracer_provider=recorder.provider)
    for row in rows:
        with model.call(start_time=START, end_time=START + 1) as call:
            call.span.set_attributes({"ml." + k: v for k, v in row.items() if v is not None})


def _batch_span(recorder, rows: list[dict], form: str) -> None:
    model = monitor("shop", version="1", tracer_provider=recorder.provider)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    with model.call(start_time=START, end_time=START + 1) as call:
        call.span.set_attribute("ml.batch.size", len(rows))
        if form == "arrays":
            call.span.set_attributes({"ml." + k: v for k, v in columns.items()})
        else:
            call.span.set_attribute("ml.batch.columns", encode_columns(columns, len(rows)))


def _aggregates(recorder) -> dict[tuple, dict]:
    rows = SegmentAggregator().aggregate(decode_request(recorder.request()))
    c = rows.columns
    key_names = ("bucket_start", "segment_dim", "segment_value", "quantity")
    out = {}
    for i in range(len(rows)):
        state = {k: c[k][i] for k in c if k not in ("exemplar_trace_ids", *key_names)}
        state["sum"] = round(state["sum"], 6)
        state["sum_sq"] = round(state["sum_sq"], 6)
        out[tuple(c[k][i] for k in key_names)] = state
    return out


@pytest.mark.parametrize("form", ["arrays", "columns"])
def test_a_batch_of_n_equals_n_single_calls(recorder, form: str) -> None:
    rows = _rows(300, seed=5)
    _single_calls(recorder, rows)
    singles = _aggregates(recorder)
    _batch_span(recorder, rows, form)
    batched = _aggregates(recorder)
    assert batched == singles
    assert len(singles) > 50


def test_batch_rows_and_per_row_prediction_ids(recorder) -> None:
    model = monitor("m", tracer_provider=recorder.provider)
    with model as call:
        call.span.set_attributes({
            "ml.batch.size": 3,
            "ml.prediction.id": ["a", "b", "c"],
            "ml.feature.x": [1.0, None, 3.0],
            "ml.feature.region": "EU",  # a scalar holds for every row
        })  # fmt: skip
    batch = decode_request(recorder.request())
    assert len(batch) == 3 and batch.prediction_ids == ["a", "b", "c"]
    rows, values = batch.quantities["feature.x"].number_data()
    assert rows.tolist() == [0, 2] and values.tolist() == [1.0, 3.0]
    rows, labels = batch.quantities["feature.region"].label_data()
    assert rows.tolist() == [0, 1, 2] and labels.tolist() == ["EU"] * 3


@pytest.mark.parametrize(
    "attributes, reason",
    [
        ({"ml.batch.size": 0}, "ml.batch.size must be an int"),
        ({"ml.batch.size": 2, "ml.feature.x": [1.0]}, "has 1 values"),
        ({"ml.batch.size": 2, "ml.batch.columns": "text"}, "must be bytes"),
        ({"ml.batch.size": 2, "ml.batch.columns": b"XXXX" + bytes(12)}, "magic"),
        ({"ml.batch.size": 3, "ml.batch.columns": encode_columns({"feature.x": [1, 2]}, 2)},
         "says 2 rows"),
    ],
)  # fmt: skip
def test_bad_batch_spans_are_rejected_whole(recorder, attributes: dict, reason: str) -> None:
    with monitor("m", tracer_provider=recorder.provider) as call:
        call.span.set_attributes(attributes)
    with monitor("m", tracer_provider=recorder.provider) as call:
        call.features(x=5.0)
    batch = decode_request(recorder.request())
    assert batch.rejected_spans == 1 and reason in batch.rejection_reasons[0]
    assert len(batch) == 1
    rows, values = batch.quantities["feature.x"].number_data()
    assert rows.tolist() == [0] and values.tolist() == [5.0]


def test_columns_round_trip_with_numpy_inputs_and_nulls() -> None:
    columns = {
        "feature.f": np.array([1.5, math.nan, -2.0]),
        "feature.i": np.array([1, 2, 3], dtype=np.int32),
        "feature.b": np.array([True, False, True]),
        "feature.s": ["a", None, "b"],
        "feature.n": [None, None, None],
    }
    decoded = {c.name: c for c in decode_columns(encode_columns(columns, 3), 3)}
    f = decoded["feature.f"]
    assert f.valid.all() and np.array_equal(f.numbers, [1.5, math.nan, -2.0], equal_nan=True)
    assert decoded["feature.i"].numbers.tolist() == [1.0, 2.0, 3.0]
    assert decoded["feature.b"].labels.tolist() == ["true", "false", "true"]
    s = decoded["feature.s"]
    assert s.valid.tolist() == [True, False, True] and s.labels[s.valid].tolist() == ["a", "b"]
    assert not decoded["feature.n"].valid.any()


def test_malformed_payloads_are_refused_with_a_reason() -> None:
    good = encode_columns({"feature.s": ["a", "b"]}, 2)
    with pytest.raises(BatchColumnsError, match="after its last column"):
        decode_columns(good + bytes(8), 2)
    with pytest.raises(BatchColumnsError, match="runs past"):
        decode_columns(good[:-2], 2)
    header = b'{"rows":1,"columns":[{"name":"feature.s","type":"category","nulls":false,' \
             b'"categories":["a"]}]}'  # fmt: skip
    payload = bytearray(struct.pack("<4sB3xI", b"SWBC", 1, len(header)) + header)
    payload.extend(bytes(-len(payload) % 8))
    payload.extend(struct.pack("<i", 7))  # code 7 of 1 category
    with pytest.raises(BatchColumnsError, match="out of range"):
        decode_columns(bytes(payload), 1)
    with pytest.raises(BatchColumnsError, match="version"):
        decode_columns(b"SWBC\x02" + good[5:], 2)
    with pytest.raises(BatchColumnsError, match="not JSON"):
        decode_columns(struct.pack("<4sB3xI", b"SWBC", 1, 3) + b"{{{", 2)
    for odd_type in (b'["int"]', b'{"a":1}', b"null", b"7"):  # unhashable types raised TypeError
        header = (
            b'{"rows":1,"columns":[{"name":"feature.x","type":' + odd_type + b',"nulls":false}]}'
        )
        framed = struct.pack("<4sB3xI", b"SWBC", 1, len(header)) + header
        with pytest.raises(BatchColumnsError, match="unknown type"):
            decode_columns(framed + bytes(-len(framed) % 8) + bytes(8), 1)
