"""segwatch detect --from/--to: every window of history, in the scheduler's order, once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from snippets import blocks_of

from segwatch.clickhouse.detection import load_manifest
from segwatch.collector.cli.main import main
from segwatch.collector.service.detect import MAX_RANGE, range_windows

HOUR = 3600
START = int(dt.datetime.now(dt.timezone.utc).timestamp()) // HOUR * HOUR - 4 * HOUR
"""The history's first minute: four hours ago, on the hour."""
MINUTES = 130
DRIFT_FROM = 95  # the minute from which ES's amounts are eight times larger


def _utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def _history(path: Path, seed: int = 7) -> Path:
    """130 minutes of logged calls, 120 a minute; ES's amounts drift from minute 95."""
    rng = np.random.default_rng(seed)
    n = MINUTES * 120
    seconds = START + np.sort(rng.integers(0, MINUTES * 60, n))
    country = rng.choice(["BR", "US", "DE", "ES"], n)
    amount = np.round(rng.lognormal(3, 0.5, n), 2)
    drifted = (country == "ES") & (seconds >= START + DRIFT_FROM * 60)
    amount[drifted] *= 8
    with open(path, "w") as out:
        out.write("ts,amount,country\n")
        out.writelines(f"{s},{a},{c}\n" for s, a, c in zip(seconds, amount, country, strict=True))
    return path


def test_windows_interleave_by_time_as_the_scheduler_runs_them() -> None:
    specs = {spec.name: spec for spec in load_manifest()}
    psi, bias = specs["psi_drift"], dataclasses.replace(specs["bias"], cadence=900)
    start = _utc(START)
    windows = range_windows([psi, bias], start, start + dt.timedelta(minutes=30))
    order = [(int((at - start).total_seconds()) // 60, i) for at, i in windows]
    assert order == [(5, 0), (10, 0), (15, 0), (15, 1), (20, 0), (25, 0), (30, 0), (30, 1)]
    # a start between boundaries: the first window is the next boundary's
    later = range_windows([psi], start + dt.timedelta(minutes=2), start + dt.timedelta(minutes=9))
    assert [at - start for at, _ in later] == [dt.timedelta(minutes=5)]
    with pytest.raises(ValueError, match="must end after it starts"):
        range_windows([psi], start, start)
    with pytest.raises(ValueError, match="past the 31 days"):
        range_windows([psi], start, start + MAX_RANGE + dt.timedelta(seconds=1))


def test_a_replayed_range_opens_the_drift_once_and_a_second_replay_adds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "segwatch.yaml"
    others = [s.name for s in load_manifest() if s.name != "psi_drift"]
    config.write_text(f"storage:\n  dsn: chdb://{tmp_path / 'store'}\ndetectors:\n"
                      + "".join(f"  {name}: {{enabled: false}}\n" for name in others))  # fmt: skip
    path = _history(tmp_path / "history.csv")
    base = ["--config", str(config)]
    assert main(["backfill", *base, "--model", "fraud", "--timestamp", "ts", str(path)]) == 0
    capsys.readouterr()
    first, last = _utc(START + 85 * 60).isoformat(), _utc(START + MINUTES * 60).isoformat()
    replay = ["detect", *base, "--from", first, "--to", last, "--json"]
    assert main(replay) == 0
    ran = json.loads(capsys.readouterr().out)
    # psi_drift runs every 5 minutes: the windows ending at minutes 90, 95, ..., 130
    assert (ran["windows"], ran["from"], ran["to"]) == (9, first, last)
    assert ran["rows"][0][:4] == ["psi_drift", 9, _utc(START + 90 * 60).isoformat(), last]
    assert ran["findings"] > 0 and ran["opened"] >= 1 and ran["open"] >= 1
    opened = ["sql", *base, "--json", "SELECT DISTINCT segment_value FROM ml_anomaly_events "
              "WHERE state = 'open' AND segment_dim = 'feature.country' "
              "AND quantity = 'feature.amount'"]  # fmt: skip
    assert main(opened) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == [["ES"]]  # the drifted one, alone
    assert main(replay) == 0  # again: every window's findings and transitions are stored
    again = json.loads(capsys.readouterr().out)
    assert (again["windows"], again["findings"], again["opened"]) == (9, 0, 0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--from", "2026-11-02T00:00:00Z", "--to", "2026-11-01T00:00:00Z"], "must be after"),
        (["--from", "-40d"], "past the 31 days one run covers"),
        (["--to", "-1h"], "--to needs --from"),
        (["--from", "-2h", "--at", "2026-11-01T00:00:00Z"], "one or the other"),
        (["--from", "yesterday"], "'yesterday' is not an ISO 8601 time"),
    ],
)
def test_a_bad_range_is_bad_usage(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_code:
        main(["detect", *arguments])
    assert exit_code.value.code == 2
    assert message in capsys.readouterr().err


def test_the_readme_walkthrough_runs_as_shown_and_finds_brs_amounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's offline evaluation, block by block, in an empty directory (no config:
    the default store ./segwatch-data)."""
    blocks = [b for b in blocks_of(Path("README.md"))
              if b.heading == "Offline evaluation: backfill and replay"]  # fmt: skip
    assert [b.lang for b in blocks] == ["python", "console"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGWATCH_CONFIG", raising=False)
    written = subprocess.run([sys.executable, "-c", blocks[0].text], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert written.returncode == 0, written.stderr
    commands = [line.removeprefix("$ ") for line in blocks[1].text.splitlines()]
    assert [c.split()[:2] for c in commands] == [["segwatch", "backfill"],
                                                 ["segwatch", "detect"],
                                                 ["segwatch", "anomalies"]]  # fmt: skip
    outputs = []
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
        outputs.append(capsys.readouterr().out)
    assert "backfilled 9000 calls of model 'fraud'" in outputs[0]
    assert "amount as feature.amount, country as feature.country" in outputs[0]
    assert "psi_drift" in outputs[1] and "anomalies opened" in outputs[1]
    found = [line for line in outputs[2].splitlines() if "feature.amount" in line]
    assert found and all("BR" in line for line in found), outputs[2]
    assert any("psi_drift" in line for line in found)


def test_a_store_without_a_second_session_runs_its_detectors_on_one() -> None:
    """segwatch detect opens a second session for the detectors' queries, except where a
    session of its own would not reach the same store: an in-memory one (a second handle
    would open another, empty store) or a client handed over without its location."""
    from segwatch.clickhouse.store import parse_dsn
    from segwatch.collector.cli.access import DirectAccess

    for location in (parse_dsn("chdb://memory"), None):
        access = DirectAccess(client=None, location=location)  # type: ignore[arg-type]
        with access.detector_helpers() as helpers:
            assert helpers == []
