"""Anomalies open after persisting, resolve once gone, and name the most specific culprit."""

from __future__ import annotations

import dataclasses
import datetime as dt

from shop_traffic import END, ingest_color_shift

from segwatch.clickhouse.detection import load_manifest, run_detector
from segwatch.clickhouse.lifecycle import Persistence, most_specific


def _at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def test_an_anomaly_opens_once_persistent_and_resolves_once_gone(client, recorder) -> None:  # type: ignore[no-untyped-def]
    ingest_color_shift(client, recorder)  # the color mix shifts in the 15 minutes before END
    spec = dataclasses.replace(
        next(s for s in load_manifest() if s.name == "psi_drift"),
        persistence=Persistence(found=2, windows=3),
    )
    timeline = []
    for minutes in range(-10, 31, 5):  # a run every 5 minutes, past the end of the traffic
        run = run_detector(client, spec, _at(END + minutes * 60))
        timeline.append((minutes, len(run.new_anomalies), len(run.opened), len(run.resolved)))
        again = run_detector(client, spec, _at(END + minutes * 60))
        assert (again.new_anomalies, again.opened, again.resolved) == ([], [], [])  # a rerun
    found = [m for m, n, _, _ in timeline if n]
    opened = [m for m, _, o, _ in timeline if o]
    resolved = [m for m, _, _, r in timeline if r]
    assert len(found) >= 2 and found[1] - found[0] <= 10, timeline
    assert opened == [found[1]], timeline  # the second finding within 3 windows opens it
    # ... and it resolves at the first run whose last 3 windows found nothing.
    assert found[-1] + 15 <= 30 and resolved == [found[-1] + 15], timeline
    events = client.query(
        "SELECT state, segment_dim, quantity, details FROM ml_anomaly_events FINAL "
        "ORDER BY window_end"
    ).result_rows
    assert [e[0] for e in events] == ["open", "resolved"]
    assert {(e[1], e[2]) for e in events} == {("__all__", "feature.color")}
    assert "PSI" in events[0][3] and "resolved" in events[1][3]


def _finding(dim: str, value: str, score: float, quantity: str = "output.score") -> dict:
    return {
        "detector": "d", "model_name": "m", "model_version": "1", "model_stage": "serving",
        "segment_dim": dim, "segment_value": value, "quantity": quantity, "score": score,
        "details": f"{dim}={value}",
    }  # fmt: skip


def test_one_alert_per_parent_and_its_crosses() -> None:
    cross = "feature.country×feature.device"
    # Concentrated in one cross: the cross is the culprit, its parent is dropped.
    kept = most_specific([_finding("feature.country", "BR", 0.3),
                          _finding(cross, "BR × ios", 0.9)])  # fmt: skip
    assert [(f["segment_dim"], f["segment_value"]) for f in kept] == [(cross, "BR × ios")]
    assert "also seen in feature.country=BR" in kept[0]["details"]
    # Spread over the parent: the parent stays, its crosses (each weaker) go.
    kept = most_specific([
        _finding(cross, "BR × ios", 0.4), _finding("feature.country", "BR", 0.6),
        _finding(cross, "BR × web", 0.5), _finding(cross, "US × ios", 0.5),
    ])  # fmt: skip
    assert [(f["segment_dim"], f["segment_value"]) for f in kept] == [
        ("feature.country", "BR"), (cross, "US × ios")]  # fmt: skip
    # Found in several crosses of the parent, one of them scoring above it by chance
    # (fewer calls, more noise): the change spans the parent, the parent is the culprit.
    kept = most_specific([
        _finding(cross, "BR × ios", 0.9), _finding("feature.country", "BR", 0.6),
        _finding(cross, "BR × web", 0.5),
    ])  # fmt: skip
    assert [(f["segment_dim"], f["segment_value"]) for f in kept] == [("feature.country", "BR")]
    assert "BR × ios" in kept[0]["details"] and "BR × web" in kept[0]["details"]
    # Another quantity, or an unrelated segment, is another family.
    kept = most_specific([_finding("feature.country", "BR", 0.6),
                          _finding(cross, "BR × ios", 0.9, quantity="feature.amount")])  # fmt: skip
    assert len(kept) == 2
