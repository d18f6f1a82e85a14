"""Baseline profiles from a training set, and the detector that compares live data with them."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from shop_traffic import END, ingest, traffic

from segwatch.clickhouse.detection import run_detectors
from segwatch.collector import baseline
from segwatch.collector.config import CollectorConfig, StorageConfig
from segwatch.collector.profile.profiles import load_profile, read_table


def _training_set(n: int = 3000) -> dict[str, np.ndarray]:
    rng = random.Random(8)
    colors = rng.choices(["red", "green", "blue"], [0.5, 0.3, 0.2], k=n)
    sizes = [rng.choice(["S", "M", "L"]) for _ in range(n)]
    return {"color": np.array(colors, dtype=object), "size": np.array(sizes, dtype=object)}


def _profile_counts(client, name: str = "training") -> dict[tuple, float]:  # type: ignore[no-untyped-def]
    rows = client.query(
        "SELECT segment_dim, segment_value, quantity, sum(count) FROM ml_baseline_aggregates "
        "WHERE baseline_name = {n:String} GROUP BY ALL",
        parameters={"n": name},
    ).result_rows
    return {tuple(r[:3]): r[3] for r in rows}


def test_profile_is_aggregated_like_live_data_and_reloading_replaces_it(client) -> None:
    data = _training_set()
    assert load_profile(client, data, model="shop", chunk_rows=700) == 3000
    counts = _profile_counts(client)
    assert counts[("__all__", "__all__", "feature.color")] == 3000
    reds = sum(1 for c in data["color"] if c == "red")
    by_color = client.query(
        "SELECT sumMap(categories)['red'] FROM ml_baseline_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.color'"
    ).result_rows[0][0]
    assert by_color == reds
    load_profile(client, data, model="shop")  # again: replaced, not doubled
    assert _profile_counts(client) == counts


def test_a_load_that_fails_part_way_leaves_the_old_profile_whole(client) -> None:  # type: ignore[no-untyped-def]
    """The detectors compare with the old profile while a new one loads, and still do
    when the load fails after some of its chunks went in (an interrupted command)."""
    load_profile(client, _training_set(), model="shop")
    old = _profile_counts(client)
    seen_while_loading: list[dict[tuple, float]] = []

    def interrupted(done: int, total: int) -> None:
        seen_while_loading.append(_profile_counts(client))
        if done == total:  # every chunk in, not yet swapped
            raise KeyboardInterrupt

    try:
        load_profile(client, _training_set(500) | {"size": np.array(["XL"] * 500, dtype=object)},
                     model="shop", chunk_rows=100, progress=interrupted)  # fmt: skip
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the load was not interrupted")
    assert seen_while_loading == [old] * 5  # five chunks in, none seen under its name
    assert _profile_counts(client) == old
    leftovers = client.query(
        "SELECT count() FROM ml_baseline_aggregates WHERE baseline_name != 'training'"
    ).result_rows
    assert leftovers == [(0,)]  # the chunks written aside are gone
    # A killed load leaves its staged rows (no finally runs): the next load deletes them.
    client.command(
        "INSERT INTO ml_baseline_aggregates SELECT * REPLACE ('training\x1fload dead' AS "
        "baseline_name) FROM (SELECT * FROM ml_baseline_aggregates)"
    )
    dead = "SELECT count() FROM ml_baseline_aggregates WHERE baseline_name = {n:String}"
    assert client.query(dead, parameters={"n": "training\x1fload dead"}).result_rows[0][0] > 0
    # A load that completes replaces it.
    load_profile(client, _training_set(500), model="shop", chunk_rows=100)
    assert _profile_counts(client)[("__all__", "__all__", "feature.color")] == 500
    assert client.query(
        "SELECT count() FROM ml_baseline_aggregates WHERE baseline_name != 'training'"
    ).result_rows == [(0,)]


def test_live_drift_against_the_training_profile_is_found(client, recorder) -> None:
    load_profile(client, _training_set(), model="shop")
    rows, _, _ = traffic(seed=3, color_weights_now=[0.2, 0.3, 0.5])
    ingest(client, recorder, rows)
    runs = {r.detector: r for r in run_detectors(client, dt.datetime.fromtimestamp(END, dt.UTC))}
    found = runs["psi_drift_training"].new_anomalies
    assert {(a["segment_dim"], a["quantity"]) for a in found} == {("__all__", "feature.color")}
    assert "against the profile 'training'" in found[0]["details"]


def test_no_drift_against_a_profile_of_the_same_distribution(client, recorder) -> None:
    load_profile(client, _training_set(), model="shop")
    rows, _, _ = traffic(seed=4, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows)
    runs = {r.detector: r for r in run_detectors(client, dt.datetime.fromtimestamp(END, dt.UTC))}
    assert runs["psi_drift_training"].new_anomalies == []


def test_python_api_takes_a_dataframe(tmp_path: Path) -> None:
    frame = pd.DataFrame({"amount": [1.0, 20.0, None, 300.0], "country": ["BR", "US", None, "BR"],
                          "output.score": [0.1, 0.2, 0.3, 0.4]})  # fmt: skip
    config = CollectorConfig(storage=StorageConfig(dsn=f"chdb://{tmp_path / 's'}"))
    assert baseline(frame, model="fraud", version="2", config=config) == 4


def test_csv_reading_types_columns(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("amount,country,flag\n1.5,BR,x\n,US,y\n3,,z\nnan,DE,w\n")
    table = read_table(str(path))
    assert table["amount"].tolist()[:3] == [1.5, None, 3.0]  # empty cell: MISSING
    assert np.isnan(table["amount"][3])  # NaN: MISSING too, once loaded
    assert table["country"].tolist() == ["BR", "US", None, "DE"]


def test_cli_loads_a_csv_with_progress(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    lines = ["amount,country"] + [f"{i % 97 + 0.5},{'BR' if i % 3 else 'US'}" for i in range(500)]
    path.write_text("\n".join(lines) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"storage:\n  dsn: chdb://{tmp_path / 'store'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "baseline", str(path), "--model",
         "fraud", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "loaded 500 rows" in result.stdout and "500/500 rows" in result.stderr
    assert "columns read: amount as feature.amount, country as feature.country\n" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "baseline", str(tmp_path / "nope.csv"),
         "--model", "fraud", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 1 and "no such file" in missing.stderr


FRAUD = """\
models:
  fraud:
    features:
      amount: {type: number}
      country: {type: category}
    outputs:
      score: {type: number}
"""


def test_columns_are_the_fields_the_config_declares(client) -> None:
    """A declared output `score` reads a column `score` (it used to be a feature, and the
    output 100 % MISSING); `output.score` still works; an undeclared column is ignored."""
    from segwatch.collector.config import parse_config
    from segwatch.collector.profile.profiles import profile_columns

    config = parse_config(FRAUD)
    data = {"amount": np.array([1.0, 20.0, 300.0]), "country": np.array(["BR", "US", "BR"]),
            "score": np.array([0.1, 0.2, 0.3]), "is_fraud": np.array([0, 1, 0])}  # fmt: skip
    columns = profile_columns(list(data), "fraud", config)
    assert columns.taken == {"amount": "feature.amount", "country": "feature.country",
                             "score": "output.score"}  # fmt: skip
    assert columns.ignored == ("is_fraud",)
    assert "score as output.score" in columns.describe() and "is_fraud" in columns.describe()
    load_profile(client, data, model="fraud", config=config)
    stored = client.query(
        "SELECT quantity, sum(count) - sum(missing) FROM ml_baseline_aggregates "
        "WHERE segment_dim = '__all__' GROUP BY quantity ORDER BY quantity"
    ).result_rows
    assert stored == [("feature.amount", 3), ("feature.country", 3), ("output.score", 3)]
    prefixed = {"amount": data["amount"], "output.score": data["score"]}
    assert profile_columns(list(prefixed), "fraud", config).taken["output.score"] == "output.score"
    # Without declared fields (zero config) every bare column is a feature, none ignored.
    assert profile_columns(list(data), "fraud").taken["score"] == "feature.score"


def test_a_table_whose_columns_match_no_declared_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("amt,cntry,label\n1,BR,0\n2,US,1\n")
    config = tmp_path / "c.yaml"
    store = tmp_path / "store"
    config.write_text(f"storage:\n  dsn: chdb://{store}\n" + FRAUD)
    result = subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "baseline", str(path), "--model",
         "fraud", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "no column is a field model 'fraud' declares" in result.stderr
    assert "amt, cntry, label" in result.stderr and not store.exists()  # refused before
