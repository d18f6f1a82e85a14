"""Sampling keeps statistics unbiased; privacy rules decide what is recorded."""

from __future__ import annotations

import hashlib
import hmac
import math
import random

import pandas as pd
import pytest

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.instrumentation import monitor


def test_sampled_calls_are_weighted_back_to_unbiased_counts_and_means(recorder) -> None:
    rng = random.Random(4)
    model = monitor("fraud", sample_rate=0.1, tracer_provider=recorder.provider)
    truth = {"BR": 0, "US": 0}
    amounts = []
    for _ in range(20_000):
        country = "BR" if rng.random() < 0.3 else "US"
        amount = rng.expovariate(1 / 50)
        truth[country] += 1
        amounts.append(amount)
        with model as call:
            call.features(country=country, amount=amount)
    spans = recorder.spans()
    assert all(s.attributes["ml.sample.weight"] == 10.0 for s in spans)
    assert 1_700 < len(spans) < 2_300  # 2,000 ± 7 σ
    rows = SegmentAggregator().aggregate(decode_request(recorder.request()))
    c = rows.columns

    def total(dim: str, value: str, field: str) -> float:
        return sum(
            c[field][i] for i in range(len(rows))
            if c["segment_dim"][i] == dim and c["segment_value"][i] == value
            and c["quantity"][i] == "feature.amount"
        )  # fmt: skip

    for country, n in truth.items():
        estimate = total("feature.country", country, "count")
        sigma = math.sqrt(n * 0.1 * 0.9) / 0.1
        assert abs(estimate - n) < 4 * sigma, (country, estimate, n)
        assert total("feature.country", country, "sampled") == pytest.approx(estimate / 10)
    mean = total("__all__", "__all__", "sum") / total("__all__", "__all__", "numeric_count")
    true_mean = sum(amounts) / len(amounts)
    assert abs(mean - true_mean) < 4 * 50 / math.sqrt(len(spans))


def test_sample_rate_is_validated() -> None:
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="sample_rate"):
            monitor("m", sample_rate=bad)


def test_allow_deny_hash_and_free_text_rules(recorder) -> None:
    model = monitor(
        "m",
        features_deny=["ssn"],
        hash_features=["user_id"],
        hash_key="k3y-for-tests",
        max_string_length=10,
        tracer_provider=recorder.provider,
    )
    with model as call:
        call.features(ssn="123-45-6789", user_id="u-42", note="short", text="a" * 500, n=3)
        call.outputs(summary="b" * 50, label="ok")
    (span,) = recorder.spans()
    a = span.attributes
    assert "ml.feature.ssn" not in a
    assert a["ml.feature.user_id"] == _hmac(b"k3y-for-tests", b"u-42")
    assert a["ml.feature.note"] == "short"
    assert "ml.feature.text" not in a and "ml.output.summary" not in a  # free text: not recorded
    assert a["ml.output.label"] == "ok" and a["ml.feature.n"] == 3


def _hmac(key: bytes, value: bytes) -> str:
    return hmac.new(key, value, hashlib.sha256).hexdigest()[:16]


def _hashed(recorder, **options) -> list[object]:  # type: ignore[no-untyped-def]
    """``user_id`` as recorded by a monitor with ``options``: one call, then a batch."""
    model = monitor("m", hash_features=["user_id"], tracer_provider=recorder.provider, **options)
    with model as call:
        call.features(user_id="u-42")
    with model.call() as call:
        call.batch(3, features={"user_id": ["u-42", 7, None]})
    single, batch = recorder.spans()[-2:]
    return [single.attributes["ml.feature.user_id"], *batch.attributes["ml.feature.user_id"]]


def test_hashed_features_are_hmac_sha256_under_the_key(recorder, monkeypatch) -> None:
    monkeypatch.delenv("SEGWATCH_HASH_KEY", raising=False)
    first = _hashed(recorder, hash_key="first key")
    assert first[0] == _hmac(b"first key", b"u-42") and first[1] == first[0]
    assert first[2] == _hmac(b"first key", b"7")
    assert first[3] is None  # MISSING stays MISSING
    second = _hashed(recorder, hash_key=b"second key")
    assert second[0] == _hmac(b"second key", b"u-42") != first[0]  # another key, another hash
    assert first[0] != hashlib.sha256(b"u-42").hexdigest()[:16]  # not the dictionary-reversible one
    monkeypatch.setenv("SEGWATCH_HASH_KEY", "from the environment")
    assert _hashed(recorder)[0] == _hmac(b"from the environment", b"u-42")
    assert _hashed(recorder, hash_key="first key")[0] == first[0]  # the argument wins


def test_hashed_features_without_a_key_fail_when_the_monitor_is_made(monkeypatch) -> None:
    """At configuration time, so a model call never meets the error."""
    monkeypatch.delenv("SEGWATCH_HASH_KEY", raising=False)
    for options in ({}, {"hash_key": None}):
        with pytest.raises(ValueError, match=r"hash_key=.*SEGWATCH_HASH_KEY"):
            monitor("m", hash_features=["user_id"], **options)
    with pytest.raises(ValueError, match="SEGWATCH_HASH_KEY"), pytest.warns(DeprecationWarning):
        monitor("m", hash_features=["user_id"], hash_salt="")  # the old default: no key
    monkeypatch.setenv("SEGWATCH_HASH_KEY", "")  # set but empty: no key either
    with pytest.raises(ValueError, match="SEGWATCH_HASH_KEY"):
        monitor("m", hash_features=["user_id"])
    with pytest.raises(ValueError, match="must not be empty"):
        monitor("m", hash_features=["user_id"], hash_key=b"")
    monitor("m")  # no hashed feature: no key needed


def test_hash_salt_is_a_deprecated_name_for_the_key(recorder, monkeypatch) -> None:
    monkeypatch.delenv("SEGWATCH_HASH_KEY", raising=False)
    with pytest.warns(DeprecationWarning, match="hash_key="):
        hashed = _hashed(recorder, hash_salt="pepper")
    assert hashed[0] == _hmac(b"pepper", b"u-42")
    with pytest.raises(ValueError, match="hash_key= only"):
        monitor("m", hash_features=["user_id"], hash_key="a", hash_salt="b")


def test_the_key_is_kept_out_of_reprs() -> None:
    model = monitor("m", hash_features=["user_id"], hash_key="s3cret-key")
    assert "s3cret-key" not in repr(model.policy)


def test_allow_list_and_record_text_on_batches(recorder) -> None:
    model = monitor(
        "m", features_allow=["country", "review"], record_text=True, max_string_length=5,
        tracer_provider=recorder.provider,
    )  # fmt: skip

    @model
    def predict(frame: pd.DataFrame) -> list[float]:
        return [0.5] * len(frame)

    predict(pd.DataFrame({"country": ["BR", "US"], "secret": [1, 2],
                          "review": ["great product", "bad"]}))  # fmt: skip
    (span,) = recorder.spans()
    assert span.attributes["ml.feature.country"] == ("BR", "US")
    assert span.attributes["ml.feature.review"] == ("great", "bad")  # truncated, as asked
    assert "ml.feature.secret" not in span.attributes


def test_a_string_instead_of_a_list_of_names_is_refused() -> None:
    with pytest.raises(ValueError, match="features_deny"):
        monitor("m", features_deny="ssn")


def test_per_row_monitor_samples_each_batch_call_once(recorder) -> None:
    @monitor("m", per_row=True, sample_rate=0.5, tracer_provider=recorder.provider)
    def predict(rows: list[dict]) -> list[float]:
        return [1.0] * len(rows)

    random.seed(11)
    for i in range(2000):
        predict([{"x": float(i)}, {"x": 2.0}])
    spans = recorder.spans()
    # One sampling decision per call: ~1,000 of 2,000 batch calls (± 7 σ) are
    # recorded, each as its two row spans and never as one batch span.
    assert not any("ml.batch.size" in s.attributes for s in spans)
    calls = [s for s in spans if "ml.model.name" not in s.attributes]
    assert 845 < len(calls) < 1_155
    assert len(spans) == 3 * len(calls)


@pytest.mark.parametrize("record_text", [False, True])
def test_free_text_in_a_plain_dict_follows_record_text(recorder, record_text: bool) -> None:
    """A plain dict takes the one-pass path: it must apply ``record_text`` as the others do."""
    model = monitor("m", record_text=record_text, max_string_length=5,
                    tracer_provider=recorder.provider)  # fmt: skip

    @model
    def predict(features: dict) -> float:
        return 0.5

    predict({"review": "great product", "country": "BR"})
    (span,) = recorder.spans()
    assert span.attributes["ml.feature.country"] == "BR"
    assert span.attributes.get("ml.feature.review") == ("great" if record_text else None)
