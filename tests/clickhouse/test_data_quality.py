"""Data-quality detectors: missing values, out-of-range numbers, never-seen values, per segment."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from scipy import stats
from shop_traffic import END, store_recorded

from segwatch.clickhouse.detection import load_manifest, run_detector
from segwatch.instrumentation import monitor

WINDOW = 900


def _payments(broken: bool, seed: int = 3) -> list[tuple[int, dict]]:
    """3 sparse hours and 15 dense minutes of payments; ``broken``: three faults at the end.

    In the last 15 minutes: amount is missing in half of BR's calls, amounts
    from ios are a thousand times larger, and DE sends a channel never seen.
    """
    rng = random.Random(seed)
    calls = []
    for second in [*range(END - 3 * 3600 - WINDOW, END - WINDOW, 4), *range(END - WINDOW, END)]:
        country = rng.choice(["BR", "US", "DE", "FR"])
        device = rng.choice(["ios", "android", "web"])
        features: dict = {"country": country, "device": device,
                          "channel": rng.choice(["app", "shop", "phone"]),
                          "amount": rng.uniform(5, 500)}  # fmt: skip
        if broken and second >= END - WINDOW:
            if country == "BR" and rng.random() < 0.5:
                features["amount"] = None
            elif device == "ios" and features["amount"] is not None:
                features["amount"] *= 1000
            if country == "DE":
                features["channel"] = "fax"
        calls.append((second, features))
    return calls


def _store(client, recorder, calls) -> None:  # type: ignore[no-untyped-def]
    model = monitor(model="payments", version="1", tracer_provider=recorder.provider)
    for second, features in calls:
        with model.call(start_time=second * 10**9, end_time=second * 10**9 + 1) as call:
            call.features(**{k: v for k, v in features.items() if v is not None})
    store_recorded(client, recorder)


def _run(client) -> dict[str, list[dict]]:  # type: ignore[no-untyped-def]
    """The findings of one data_quality run, by the detector (check) they belong to."""
    spec = next(s for s in load_manifest() if s.name == "data_quality")
    run = run_detector(client, spec, dt.datetime.fromtimestamp(END, dt.timezone.utc))
    found: dict[str, list[dict]] = {name: [] for name in spec.detectors}
    for anomaly in run.new_anomalies:
        found[anomaly["detector"]].append(anomaly)
    return found


def _culprits(found: list[dict]) -> list[tuple[str, str, str]]:
    return [(a["segment_dim"], a["segment_value"], a["quantity"]) for a in found]


def test_each_break_is_found_in_its_segment(client, recorder) -> None:  # type: ignore[no-untyped-def]
    calls = _payments(broken=True)
    _store(client, recorder, calls)

    found = _run(client)
    missing = found["data_missing"]
    assert _culprits(missing) == [("feature.country", "BR", "feature.amount")]
    br_now = [f for s, f in calls if s >= END - WINDOW and f["country"] == "BR"]
    share = sum(f["amount"] is None for f in br_now) / len(br_now)
    assert missing[0]["current_value"] == pytest.approx(share) and missing[0]["baseline_value"] == 0
    # The one-sided binomial test, as scipy has it: of the calls missing in both
    # windows (none in the baseline), at least as many in the window as were.
    n_b = sum(1 for s, f in calls if s < END - WINDOW and f["country"] == "BR")
    gone = sum(f["amount"] is None for f in br_now)
    expected = stats.binom.sf(gone - 1, gone, len(br_now) / (len(br_now) + n_b))
    assert missing[0]["p_value"] == pytest.approx(expected, rel=1e-6, abs=1e-300)
    # the shares before and after, and the test behind the p-value
    assert f"missing 0 % → {round(100 * share, 1)} % of calls" in missing[0]["details"]
    assert "(one-sided binomial test p " in missing[0]["details"]

    out_of_range = found["data_range"]
    assert _culprits(out_of_range) == [("feature.device", "ios", "feature.amount")]
    assert out_of_range[0]["current_value"] == pytest.approx(1.0)  # every ios amount
    assert "outside" in out_of_range[0]["details"]

    unseen = found["data_categories"]
    assert _culprits(unseen) == [("feature.country", "DE", "feature.channel")]
    assert unseen[0]["current_value"] == pytest.approx(1.0)
    assert "fax" in unseen[0]["details"]


def test_healthy_data_raises_nothing(client, recorder) -> None:  # type: ignore[no-untyped-def]
    _store(client, recorder, _payments(broken=False))
    assert _run(client) == {"data_missing": [], "data_range": [], "data_categories": []}
