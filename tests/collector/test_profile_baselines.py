"""Profiles as the config says: which profile each model is compared with, numeric
segments that have their counterpart in the profile, and MISSING meaning one thing.

Live windows are built as the collector's pipeline would build them (a batch of
calls through the segmentation plan and the aggregator, stored by the exporter),
without spans: the span path is tested elsewhere, and this keeps 15-minute windows
of thousands of calls fast.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from segwatch.clickhouse.detection import run_detectors
from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config import CollectorConfig, parse_config
from segwatch.collector.config.detector_specs import configured_detectors
from segwatch.collector.model_calls import Column, LabelChunk, ModelCallBatch
from segwatch.collector.profile.profiles import load_profile, read_table
from segwatch.collector.profile.quantiles import refresh_quantile_buckets
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.collector.store.exporter import ClickHouseExporter

END = 1_800_000_000 - 1_800_000_000 % 300  # a 5-minute boundary
COLORS = ["red", "green", "blue"]
USUAL = [0.5, 0.3, 0.2]
LOW_SUPPORT = "segments: {min_segment_size: 100}\n"  # 10 deciles of a few thousand calls


def _training(n: int = 20_000, seed: int = 1, missing: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(4, 1, n)
    age = rng.uniform(18, 90, n)
    if missing:
        amount[rng.random(n) < missing] = np.nan
        age[rng.random(n) < missing] = np.nan
    colors = np.array(COLORS, dtype=object)[rng.choice(3, n, p=USUAL)]
    return {"amount": amount, "age": age, "color": colors}


def _live_batch(
    model: str, version: str, n: int, seed: int, shifted: tuple[float, float] | None = None,
    missing: float = 0.0,
) -> ModelCallBatch:  # fmt: skip
    """``n`` calls over the 15 minutes before ``END``, from the training distribution; with
    ``shifted`` (low, high), the calls whose amount lies there get another color mix; with
    ``missing``, that share of amounts and ages are omitted (MISSING)."""
    rng = np.random.default_rng(seed)
    amount, age = rng.lognormal(4, 1, n), rng.uniform(18, 90, n)
    color = rng.choice(3, n, p=USUAL)
    if shifted is not None:
        inside = (amount >= shifted[0]) & (amount < shifted[1])
        color[inside] = rng.choice(3, int(inside.sum()), p=[0.1, 0.1, 0.8])
    batch = ModelCallBatch(models=[(model, version, "serving")])
    batch.model_index = [0] * n
    start = (END - 900) * 10**9
    batch.start_ns = (start + rng.integers(0, 900 * 10**9, n)).tolist()
    batch.trace_ids = [bytes(16)] * n
    batch.weights = [1.0] * n
    rows = np.arange(n, dtype=np.int64)
    for name, values in (("feature.amount", amount), ("feature.age", age)):
        present = rng.random(n) >= missing
        column = Column()
        column.number_chunks.append((rows[present], values[present]))
        batch.quantities[name] = column
    colors = Column()
    colors.label_chunks.append(LabelChunk(rows, color.astype(np.int64), list(COLORS)))
    batch.quantities["feature.color"] = colors
    return batch


def _store_live(client, plan: SegmentationPlan, *batches: ModelCallBatch) -> None:  # type: ignore[no-untyped-def]
    exporter = ClickHouseExporter(client)
    exporter.start()
    try:
        aggregator = SegmentAggregator(plan)
        for batch in batches:
            exporter.submit(aggregator.aggregate(batch)).result(timeout=60)
    finally:
        exporter.shutdown()


def _training_findings(client, config: CollectorConfig) -> list[dict]:  # type: ignore[no-untyped-def]
    specs = [s for s in configured_detectors(config) if s.name == "psi_drift_training"]
    (run,) = run_detectors(client, dt.datetime.fromtimestamp(END, dt.UTC), specs)
    return run.new_anomalies


def test_each_numeric_decile_segment_is_compared_and_a_drift_in_one_is_found(client) -> None:
    config = parse_config(LOW_SUPPORT)
    load_profile(client, _training(), model="shop", config=config)
    plan = SegmentationPlan(config)
    assert refresh_quantile_buckets(client, plan) == 2  # amount and age: deciles
    edges = plan.buckets("shop", "feature.amount").edges.tolist()  # type: ignore[attr-defined]
    assert len(edges) == 9
    # Every live numeric segment has its counterpart in the profile, with the same label.
    _store_live(client, plan, _live_batch("shop", "1", 6000, seed=2, shifted=(edges[3], edges[4])))
    live = set(
        client.query(
            "SELECT DISTINCT segment_dim, segment_value FROM ml_segment_aggregates "
            "WHERE segment_dim IN ('feature.amount', 'feature.age')"
        ).result_rows
    )
    profile = set(
        client.query(
            "SELECT DISTINCT segment_dim, segment_value FROM ml_baseline_aggregates "
            "WHERE segment_dim IN ('feature.amount', 'feature.age')"
        ).result_rows
    )
    assert len(live) == 20 and live <= profile
    found = _training_findings(client, config)
    culprit = f"[{edges[3]:g}, {edges[4]:g})"
    assert {(a["segment_dim"], a["segment_value"], a["quantity"]) for a in found} == {
        ("feature.amount", culprit, "feature.color")
    }, [a["details"] for a in found]


def test_no_drift_where_nothing_changed_in_any_numeric_segment(client) -> None:
    config = parse_config(LOW_SUPPORT)
    load_profile(client, _training(), model="shop", config=config)
    plan = SegmentationPlan(config)
    refresh_quantile_buckets(client, plan)
    _store_live(client, plan, _live_batch("shop", "1", 6000, seed=3))
    assert _training_findings(client, config) == []


def test_nan_in_a_profile_is_missing_as_an_omitted_attribute_is(client, tmp_path) -> None:
    """5 % NaN in the training set (parquet, CSV with empty cells), 5 % omitted live: no drift
    (NaN counted as a value once made a whole-model drift of PSI 1.08 here)."""
    config = parse_config(LOW_SUPPORT)
    frame = pd.DataFrame(_training(missing=0.05))
    parquet, csv = tmp_path / "train.parquet", tmp_path / "train.csv"
    frame.to_parquet(parquet)
    frame.to_csv(csv, index=False)  # NaN: an empty cell
    assert ",," in csv.read_text() or ",\n" in csv.read_text()
    for path in (parquet, csv):
        load_profile(client, read_table(str(path)), model="shop", config=config)
        missing = client.query(
            "SELECT sum(missing) / sum(count) FROM ml_baseline_aggregates "
            "WHERE segment_dim = '__all__' AND quantity = 'feature.amount'"
        ).result_rows[0][0]
        assert 0.04 < missing < 0.06, path
        nan_segments = client.query(
            "SELECT count() FROM ml_baseline_aggregates WHERE segment_value = 'NaN' "
            "OR has(mapKeys(categories), 'nan')"
        ).result_rows[0][0]
        assert nan_segments == 0, path
    plan = SegmentationPlan(config)
    refresh_quantile_buckets(client, plan)
    _store_live(client, plan, _live_batch("shop", "1", 6000, seed=4, missing=0.05))
    assert _training_findings(client, config) == []


BASELINES = """\
segments: {min_segment_size: 100}
models:
  shop:
    features:
      amount: {type: number}
      age: {type: number}
      color: {type: category}
    baseline: v2_training
  other:
    features:
      color: {type: category}
baselines:
  v2_training: {kind: training, profile: retrained}
"""


def test_the_config_chooses_each_models_profile(client) -> None:
    """shop is compared with profile `retrained` (its config's baseline), not `training`;
    `other` (no baseline) with `training`; a model without a loaded profile with nothing."""
    config = parse_config(BASELINES)
    shifted = _training(seed=5)
    shifted["color"] = np.array(COLORS, dtype=object)[np.random.default_rng(5).choice(
        3, len(shifted["color"]), p=[0.1, 0.1, 0.8])]  # fmt: skip
    load_profile(client, shifted, model="shop", name="training", config=config)  # not shop's
    load_profile(client, _training(seed=6), model="shop", name="retrained", config=config)
    load_profile(client, shifted, model="other", config=config)  # other's: training
    plan = SegmentationPlan(config)
    refresh_quantile_buckets(client, plan)
    _store_live(
        client,
        plan,
        _live_batch("shop", "1", 4000, seed=7),
        _live_batch("other", "1", 4000, seed=8),
        _live_batch("third", "1", 4000, seed=9),
    )
    found = _training_findings(client, config)
    assert {(a["model_name"], a["segment_dim"], a["quantity"]) for a in found} == {
        ("other", "__all__", "feature.color")
    }, [a["details"] for a in found]
    assert "against the profile 'training'" in found[0]["details"]  # the one it was compared with
    # The plan buckets shop at retrained's edges: the training profile's are others.
    retrained = set(
        client.query(
            "SELECT DISTINCT segment_value FROM ml_baseline_aggregates WHERE model_name = 'shop' "
            "AND baseline_name = 'retrained' AND segment_dim = 'feature.amount'"
        ).result_rows
    )
    live = set(
        client.query(
            "SELECT DISTINCT segment_value FROM ml_segment_aggregates WHERE model_name = 'shop' "
            "AND segment_dim = 'feature.amount'"
        ).result_rows
    )
    assert live <= retrained


def test_a_version_reads_its_own_profile_else_the_unversioned_one(client) -> None:
    """Version 2 has a profile of its own (its shift is expected there); version 1 falls
    back to the profile loaded without a version; the two are never added together."""
    config = parse_config(LOW_SUPPORT)
    usual, shifted = _training(seed=10), _training(seed=11)
    shifted["color"] = np.array(COLORS, dtype=object)[np.random.default_rng(11).choice(
        3, len(shifted["color"]), p=[0.1, 0.1, 0.8])]  # fmt: skip
    load_profile(client, usual, model="shop", config=config)
    load_profile(client, shifted, model="shop", version="2", config=config)
    plan = SegmentationPlan(config)
    refresh_quantile_buckets(client, plan)
    v2 = _live_batch("shop", "2", 4000, seed=12)  # the usual mix: drifted from v2's profile
    _store_live(client, plan, _live_batch("shop", "1", 4000, seed=13), v2)
    found = _training_findings(client, config)
    assert {(a["model_version"], a["segment_dim"], a["quantity"]) for a in found} == {
        ("2", "__all__", "feature.color")
    }, [a["details"] for a in found]
    assert "against the profile 'training' (version 2)" in found[0]["details"]
    # Pinned: every version reads version 2's profile, so version 1 drifts too (version
    # 2's finding of this window was stored by the run above: not new again).
    pinned = parse_config(LOW_SUPPORT + "models:\n  shop:\n    baseline: v2\n"
                          "baselines:\n  v2: {profile: training, version: '2'}\n")  # fmt: skip
    found = _training_findings(client, pinned)
    assert {(a["model_version"], a["segment_dim"], a["quantity"]) for a in found} == {
        ("1", "__all__", "feature.color")
    }, [a["details"] for a in found]
    assert "against the profile 'training' (version 2)" in found[0]["details"]  # pinned


@pytest.mark.parametrize("kind", ["trailing", "same_hour_last_week", "version"])
def test_a_removed_baseline_kind_says_what_to_use_instead(kind: str) -> None:
    from segwatch.collector.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(f"baselines:\n  b: {{kind: {kind}, version: '2'}}\n")
    (problem,) = info.value.problems
    assert problem.startswith("baselines.b.kind (line 2): kind") and "detectors." in problem
    with pytest.raises(ConfigError, match=r"window is no longer a baseline key.*psi_drift"):
        parse_config("baselines:\n  b: {window: 1d}\n")


def test_nan_sent_live_is_missing_in_every_form(recorder) -> None:
    """A NaN span attribute, a NaN element of a batch array and of ``ml.batch.columns`` (from
    numpy or pandas) are MISSING, as an omitted attribute is (and as NaN in a training set
    is); a pandas column with NaN stays numbers (it was once sent as text categories)."""
    import math

    from segwatch.collector.decode.reference_reader import decode_request
    from segwatch.instrumentation import monitor
    from segwatch.instrumentation.batch_columns import encode_columns

    model = monitor("shop", tracer_provider=recorder.provider)
    values, start = [1.5, math.nan, 3.0], END * 10**9
    for value in values:
        with model.call(start_time=start, end_time=start + 1) as call:
            call.span.set_attribute("ml.feature.amount", value)
            call.span.set_attribute("ml.output.score", 0.5)  # measured per amount segment
    with model.call(start_time=start, end_time=start + 1) as call:
        call.span.set_attribute("ml.batch.size", 3)
        call.span.set_attribute("ml.feature.amount", values)
        call.span.set_attribute("ml.output.score", 0.5)
    with model.call(start_time=start, end_time=start + 1) as call:
        call.span.set_attribute("ml.batch.size", 3)
        call.span.set_attribute(
            "ml.batch.columns", encode_columns({"feature.amount": np.array(values)}, 3)
        )
        call.span.set_attribute("ml.output.score", 0.5)
    with model.call(start_time=start, end_time=start + 1) as call:  # pandas: numbers stay numbers
        call.span.set_attribute("ml.batch.size", 3)
        column = pd.Series(values)
        call.span.set_attribute("ml.batch.columns", encode_columns({"feature.amount": column}, 3))
        call.span.set_attribute("ml.output.score", 0.5)
    rows = SegmentAggregator().aggregate(decode_request(recorder.request()))
    c = rows.columns
    whole = next(
        i
        for i in range(len(rows))
        if c["segment_dim"][i] == "__all__" and c["quantity"][i] == "feature.amount"
    )
    assert (c["count"][whole], c["missing"][whole], c["numeric_count"][whole]) == (12, 4, 8)
    assert not c["categories"][whole]  # no "nan" value, no number sent as text
    segments = {c["segment_value"][i] for i in range(len(rows))
                if c["segment_dim"][i] == "feature.amount"}  # fmt: skip
    assert "MISSING" in segments and "NaN" not in segments
