"""A finding recomputed without a cause's calls: segment names back to raw-call conditions,
and the statistics again without those calls."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from segwatch.clickhouse.explained import explained_by
from segwatch.clickhouse.segment_calls import segment_condition
from segwatch.collector.segment.buckets import EdgeBuckets, LinearBuckets, LogBuckets

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)


def _selected(client, dim: str, label: str, values: list[float | str | None]) -> list[bool]:  # type: ignore[no-untyped-def]
    """Which of these calls (one value of ``dim`` each: a number, a string or missing) the
    condition of segment (dim, label) selects, in order."""
    condition, parameters = segment_condition(dim, label, "s")  # type: ignore[misc]
    numbers = [v if isinstance(v, float) else 0.0 for v in values]
    kinds = ["n" if isinstance(v, float) else "s" if isinstance(v, str) else "" for v in values]
    strings = [v if isinstance(v, str) else "" for v in values]
    rows = client.query(
        f"SELECT i, {condition} FROM ("
        "  SELECT i, CAST(if(kind = 'n', map({d:String}, number), map()),"
        "                 'Map(LowCardinality(String), Float64)') AS numbers,"
        "         CAST(if(kind = 's', map({d:String}, text), map()),"
        "              'Map(LowCardinality(String), String)') AS strings"
        "  FROM (SELECT arrayJoin(arrayZip(range(length({n:Array(Float64)})), {n:Array(Float64)},"
        "               {k:Array(String)}, {t:Array(String)})) AS z,"
        "        z.1 AS i, z.2 AS number, z.3 AS kind, z.4 AS text)) ORDER BY i",
        parameters={**parameters, "d": dim, "n": numbers, "k": kinds, "t": strings},
    ).result_rows
    return [bool(selected) for _, selected in rows]


@pytest.mark.parametrize(
    "buckets",
    [LogBuckets(10), LogBuckets(2), LinearBuckets(6, 1.5), EdgeBuckets((7, 30, 365, 1825))],
    ids=["log10", "log2", "linear", "edges"],
)
def test_a_bucket_label_selects_exactly_the_values_the_collector_puts_in_it(
    client, buckets
) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    values = np.concatenate([
        rng.lognormal(3, 3, 40), -rng.lognormal(2, 2, 20), rng.uniform(-50, 2000, 40),
        [0.0, 7.0, 30.0, 1.5, 7.5, 1000.0, 0.001, float("nan"), float("inf"), -float("inf")],
    ])  # fmt: skip
    values = values[~(np.isfinite(values) & (np.abs(values) > 1e5))]  # bounds: 6 digits
    codes = buckets.codes(values)
    labels = sorted({buckets.label(int(c)) for c in codes})
    assert len(labels) >= 4
    calls: list[float | str | None] = [*(float(v) for v in values), "text", None]
    for label in labels:
        inside = [buckets.label(int(code)) == label for code in codes] + [False, False]
        selected = _selected(client, "feature.x", label, calls)
        wrong = [v for v, a, b in zip(calls, selected, inside, strict=True) if a != b]
        assert not wrong, (label, wrong)


def test_categories_missing_crosses_and_the_rest() -> None:
    assert segment_condition("feature.country", "__other__", "a") is None
    condition, parameters = segment_condition(
        "feature.country×feature.amount", "BR × [100, 1000)", "a"
    )  # type: ignore[misc]
    assert parameters == {
        "a_0_dim": "feature.country", "a_0_value": "BR",
        "a_1_dim": "feature.amount", "a_1_low": 100.0, "a_1_high": 1000.0,
    }  # fmt: skip
    assert "BR" not in condition  # values are parameters, never SQL text
    assert segment_condition("__all__", "__all__", "a") == ("1", {})


def test_missing_and_category_segments_on_the_engine(client) -> None:  # type: ignore[no-untyped-def]
    calls: list[float | str | None] = ["BR", "US", None, 3.0]
    assert _selected(client, "feature.country", "BR", calls) == [True, False, False, False]
    assert _selected(client, "feature.country", "MISSING", calls) == [False, False, True, False]
    assert _selected(client, "feature.returning", "true", ["true", "false"]) == [True, False]


def _calls(client, rows: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    client.insert(
        "ml_model_calls",
        [[r["at"], f"{i:032x}", f"{i:016x}", 1000, "fraud", "1", "serving", "predict", "",
          "svc", r["numbers"], r["strings"]] for i, r in enumerate(rows)],
        column_names=["timestamp", "trace_id", "span_id", "duration_ns", "model_name",
                      "model_version", "model_stage", "operation", "prediction_id",
                      "service_name", "numbers", "strings"],
    )  # fmt: skip


def _finding(detector: str, dim: str, value: str, quantity: str, **extra: Any) -> dict[str, Any]:
    return {
        "detector": detector, "model_name": "fraud", "model_version": "1",
        "model_stage": "serving", "segment_dim": dim, "segment_value": value,
        "quantity": quantity, "window_start": T0 - dt.timedelta(minutes=15), "window_end": T0,
        "baseline_start": T0 - dt.timedelta(minutes=75), "threshold": 0.2, **extra,
    }  # fmt: skip


def test_a_whole_model_drift_one_segment_carries_is_explained_by_it(client) -> None:  # type: ignore[no-untyped-def]
    """The score drifts for BR only; the whole model's score drifts with it. Without BR's
    calls the whole model's PSI is back under 0.2; without US's it is not."""
    rng = np.random.default_rng(3)
    rows = []
    for minute_ago, current in [(m, m < 15) for m in range(75)]:
        at = T0 - dt.timedelta(minutes=minute_ago, seconds=30)
        for country in ("BR", "US", "DE"):
            for score in rng.beta(2, 5, 30):
                shifted = score + (0.5 if current and country == "BR" else 0.0)
                rows.append({"at": at, "numbers": {"output.score": float(shifted)},
                             "strings": {"feature.country": country}})  # fmt: skip
    _calls(client, rows)
    whole = _finding("psi_drift", "__all__", "__all__", "output.score", support=15 * 90)
    explained = explained_by(client, whole, ("feature.country", "BR"))
    assert explained is not None and explained.startswith(
        "without its 450 calls there, its 900 calls give PSI 0.0"
    )
    assert explained_by(client, whole, ("feature.country", "US")) is None
    # A finding the raw calls do not reproduce (DE's score never moved) is not explained
    # away by a cause that is not even among its calls: nothing to attach.
    calm = _finding("psi_drift", "feature.country", "DE", "output.score", support=450)
    assert explained_by(client, calm, ("feature.device", "ios")) is None
    # data_missing: amounts missing for BR only (here: every call lacks it, BR or not,
    # so without BR the share stays: not explained).
    missing = _finding("data_missing", "__all__", "__all__", "feature.amount", support=1350,
                       threshold=0.1, statistics={"baseline_share": 0.0})  # fmt: skip
    assert explained_by(client, missing, ("feature.country", "BR")) is None
