"""The volume detector: a segment's traffic vanishes while the model's does not."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest
from scipy import stats
from shop_traffic import END
from test_data_quality import WINDOW, _store

from segwatch.clickhouse.detection import load_manifest, run_detector


def _traffic(vanished: str | None, dip: float = 1.0, seed: int = 4) -> list[tuple[int, dict]]:
    """Steady calls from four countries; in the last 15 minutes ``vanished`` sends nothing
    and the whole model's traffic is scaled by ``dip`` (a quiet hour)."""
    rng = random.Random(seed)
    calls = []
    for second in range(END - 3 * 3600, END):
        country = rng.choice(["BR", "US", "DE", "FR"])
        if second >= END - WINDOW and (country == vanished or rng.random() > dip):
            continue
        calls.append((second, {"country": country, "amount": rng.uniform(1, 100)}))
    return calls


def _run(client) -> list[dict]:  # type: ignore[no-untyped-def]
    spec = next(s for s in load_manifest() if s.name == "volume")
    # ~225 calls a window per country here: the default 200 expected calls is too close.
    spec = dataclasses.replace(spec, parameters={**spec.parameters, "min_support": 100})
    return run_detector(client, spec, dt.datetime.fromtimestamp(END, dt.timezone.utc)).new_anomalies


def test_a_vanished_segment_is_found(client, recorder) -> None:  # type: ignore[no-untyped-def]
    calls = _traffic(vanished="FR")
    _store(client, recorder, calls)
    (found,) = _run(client)
    assert (found["segment_dim"], found["segment_value"]) == ("feature.country", "FR")
    assert found["support"] == 0 and found["score"] == 1.0
    before = [f for s, f in calls if s < END - WINDOW]
    now = [f for s, f in calls if s >= END - WINDOW]
    expected = sum(f["country"] == "FR" for f in before) / len(before) * len(now)
    assert found["baseline_value"] == pytest.approx(expected)
    assert found["p_value"] == pytest.approx(stats.poisson.cdf(0, expected), rel=1e-6, abs=1e-300)
    assert "traffic vanished for feature.country=FR" in found["details"]
    assert len(found["exemplar_trace_ids"]) > 0  # traces from before it vanished


def test_a_model_wide_dip_flags_no_segment(client, recorder) -> None:  # type: ignore[no-untyped-def]
    _store(client, recorder, _traffic(vanished=None, dip=0.4))
    assert _run(client) == []
