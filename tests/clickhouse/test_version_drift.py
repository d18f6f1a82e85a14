"""Version comparison: a shadow model that scores differently on one segment is found there."""

from __future__ import annotations

import datetime as dt
import random

from shop_traffic import END, store_recorded

from segwatch.clickhouse.detection import load_manifest, run_detector
from segwatch.instrumentation import monitor

WINDOW = 900


def _shadow_traffic(client, recorder, worse_for: str | None) -> None:  # type: ignore[no-untyped-def]
    """15 minutes of calls scored by the champion (v1, serving) and a shadow (v2) alike,
    except that the shadow scores ``worse_for``'s calls far lower."""
    rng = random.Random(8)
    champion = monitor(model="scorer", version="v1", tracer_provider=recorder.provider)
    shadow = monitor(
        model="scorer", version="v2", stage="shadow", tracer_provider=recorder.provider
    )
    for second in range(END - WINDOW, END):
        country = rng.choice(["BR", "US", "DE", "FR"])
        score = rng.betavariate(5, 2)
        for model, value in (
            (champion, score),
            (shadow, score * (0.3 if country == worse_for else 1)),
        ):
            with model.call(start_time=second * 10**9, end_time=second * 10**9 + 1) as call:
                call.features(country=country)
                call.outputs(score=value)
    store_recorded(client, recorder)


def _run(client) -> list[dict]:  # type: ignore[no-untyped-def]
    spec = next(s for s in load_manifest() if s.name == "version_drift")
    return run_detector(client, spec, dt.datetime.fromtimestamp(END, dt.timezone.utc)).new_anomalies


def test_a_shadow_worse_on_one_segment_is_found_there(client, recorder) -> None:  # type: ignore[no-untyped-def]
    _shadow_traffic(client, recorder, worse_for="BR")
    found = _run(client)
    assert [(a["model_version"], a["model_stage"], a["segment_dim"], a["segment_value"],
             a["quantity"]) for a in found] == [
        ("v2", "shadow", "feature.country", "BR", "output.score")]  # fmt: skip
    assert "against the champion v1 (serving) in the same window" in found[0]["details"]
    assert found[0]["current_value"] < found[0]["baseline_value"]


def test_a_shadow_that_agrees_raises_nothing(client, recorder) -> None:  # type: ignore[no-untyped-def]
    _shadow_traffic(client, recorder, worse_for=None)
    assert _run(client) == []
