"""The PSI detector on the real embedded ClickHouse, checked against numpy."""

from __future__ import annotations

import datetime as dt
import textwrap

import numpy as np
import pytest
from shop_traffic import END, ingest, traffic

from segwatch.clickhouse.detection import (
    ManifestError,
    load_manifest,
    parse_duration,
    run_detectors,
)


def _psi(b: np.ndarray, c: np.ndarray) -> float:
    pb = (b + 0.5) / (b.sum() + 0.5 * len(b))
    pc = (c + 0.5) / (c.sum() + 0.5 * len(c))
    return float(np.sum((pc - pb) * np.log(pc / pb)))


def test_psi_matches_numpy_and_reruns_add_nothing(client, recorder) -> None:
    rows, before, now = traffic(seed=3, color_weights_now=[0.2, 0.3, 0.5])
    ingest(client, recorder, rows)
    at = dt.datetime.fromtimestamp(END, dt.timezone.utc)
    runs = {r.detector: r for r in run_detectors(client, at)}
    assert runs["psi_drift_training"].new_anomalies == []  # no training profile loaded
    run = runs["psi_drift"]
    found = {(a["segment_dim"], a["segment_value"], a["quantity"]): a for a in run.new_anomalies}
    # A global shift of color: every size drifts alike, so the whole model is the culprit.
    assert set(found) == {("__all__", "__all__", "feature.color")}
    anomaly = found[("__all__", "__all__", "feature.color")]
    assert anomaly["score"] == pytest.approx(_psi(before, now), rel=1e-9)
    assert anomaly["support"] == now.sum() and anomaly["baseline_support"] == before.sum()
    assert "PSI" in anomaly["details"] and len(anomaly["exemplar_trace_ids"][0]) == 32
    assert all(r.new_anomalies == [] for r in run_detectors(client, at))  # a rerun
    count = client.query("SELECT count() FROM ml_anomalies FINAL").result_rows[0][0]
    assert count == 1


def test_no_anomaly_without_drift(client, recorder) -> None:
    rows, _, _ = traffic(seed=4, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows)
    runs = run_detectors(client, dt.datetime.fromtimestamp(END, dt.timezone.utc))
    assert all(r.new_anomalies == [] for r in runs)


def test_partial_rows_merge_in_clickhouse(client, recorder) -> None:
    rows, _, _ = traffic(seed=5, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows[::2])
    ingest(client, recorder, rows[1::2])
    client.command("OPTIMIZE TABLE ml_segment_aggregates FINAL")
    merged = client.query(
        "SELECT count(), sum(count) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.color'"
    ).result_rows[0]
    minutes = len({at // 60 for at, _ in rows})
    assert merged == (minutes, len(rows))  # one merged row per minute, every call counted


def test_manifest_is_valid_and_durations_parse() -> None:
    psi, training = load_manifest()[:2]
    assert (psi.name, psi.window, psi.baseline) == ("psi_drift", 900, 3600)
    assert training.parameters["baseline_name"] == "training"
    assert "ml_baseline_aggregates" in training.sql and "ml_baseline_aggregates" not in psi.sql
    assert "/*@" not in psi.sql + training.sql  # every fragment marker was filled
    assert parse_duration("2h") == 7200
    for bad in ["", "5", "0m", "1w", "m5"]:
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_bad_manifest_lists_every_problem(tmp_path, monkeypatch) -> None:
    package = tmp_path / "fake_detectors"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ok.sql").write_text("SELECT 1")
    (package / "manifest.yaml").write_text(
        textwrap.dedent("""
        detectors:
          - name: ok
            cadence: 5x
            window: 15m
            baseline: 1h
            colour: red
            parameters: {window_start: 1}
          - name: Bad-Name
          - name: missing_file
            file: nope.sql
            cadence: 1m
            window: 1m
            baseline: 1m
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ManifestError) as info:
        load_manifest("fake_detectors")
    message = str(info.value)
    for expected in ["cadence", "colour", "window_start", "Bad-Name", "nope.sql"]:
        assert expected in message
