"""`segwatch demo`, the main job, as a user runs it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from segwatch.collector.cli.demo import DEMO_CONFIG, follow_up


def test_demo_finds_the_injected_segment_and_nothing_else(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    """``segwatch demo --data DIR --json``, run once for the whole test run (conftest)."""
    assert demo_run.returncode == 0, demo_run.stderr
    table = json.loads(demo_run.stdout)
    segment = table["columns"].index("segment")
    model = table["columns"].index("model")
    found = {(row[model], row[segment]) for row in table["rows"]}
    assert found == {("fraud", "feature.country=BR")}
    # The open incidents too: one, rooted in BR, its consequences there.
    [incident] = table["incidents"]
    assert incident["model"] == "fraud" and incident["root"].endswith("feature.country=BR")
    assert all(c.endswith("for feature.country=BR") for c in incident["consequences"])
    reported = {name for run in table["runs"] for name in run["reports_as"]}
    assert incident["root_detector"] in reported
    # Progress goes to stderr with --json, and says what happened.
    assert "simulated  75/75 minutes" in demo_run.stderr
    assert "found the injected drift" in demo_run.stderr
    assert "findings on standard output are" in demo_run.stderr  # not "above": on stdout


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_demo_output() -> list[str]:
    """The README's `$ segwatch demo` block: the lines it says the demo prints."""
    text = README.read_text(encoding="utf-8")
    start = text.index("```console\n$ segwatch demo\n") + len("```console\n$ segwatch demo\n")
    return text[start : text.index("\n```", start)].splitlines()


def _shape(line: str) -> str:
    """A line without what changes from run to run: trace ids, numbers (scores, times,
    ports, counts), the temporary store's directory, and the alignment they move. A window
    that crosses midnight names its end's date too (``2026-12-06 23:00–2026-12-07 01:00``,
    where the README's, within a day, reads ``2026-12-06 07:35–07:50``): one shape."""
    line = re.sub(r"\b[0-9a-f]{32}\b", "ID", line)
    line = re.sub(r"(?<![\w.])/\S+", "PATH", line)
    line = re.sub(r"\d+(\.\d+)?", "N", line)
    line = line.replace("N:N–N-N-N N:N", "N:N–N:N")
    return " ".join(line.split())


def _table(lines: list[str]) -> tuple[list[str], set[tuple[str, ...]]]:
    """The columns and the (detector, model, segment, quantity) rows of the printed table."""
    header = next(i for i, line in enumerate(lines) if line.startswith("detector "))
    end = next(i for i in range(header, len(lines)) if lines[i].startswith("("))
    rows = {tuple(line.split()[:4]) for line in lines[header + 2 : end]}
    return lines[header].split(), rows


def test_demo_prints_what_the_readme_shows_and_runs_again_on_its_directory(
    demo_store: Path, tmp_path: Path
) -> None:
    """Run again on a directory an earlier demo made (its config in it too), the demo found
    nothing (every window was decided): it now says so and starts from an empty store. What
    it prints is the README's block (a run without --data), line for line, up to ids,
    numbers and paths, but the last, which names the config it wrote: that config validates
    and lists the anomalies its findings opened (found in two windows), as the README says.
    A directory no demo made is refused, a user's own segwatch.yaml in it kept."""
    earlier = tmp_path / "earlier"
    shutil.copytree(demo_store, earlier, symlinks=True)
    assert (earlier / DEMO_CONFIG).is_file()  # the earlier demo wrote it: still its directory
    again = subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "demo", "--data", str(earlier)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    printed = again.stdout.splitlines()
    assert printed[0] == (f"segwatch demo: {earlier} holds an earlier demo's store: starting "
                          "from an empty one")  # fmt: skip
    readme = _readme_demo_output()
    assert _table(printed[1:]) == _table(readme)
    assert [_shape(line) for line in printed[1:-1]] == [_shape(line) for line in readme[:-1]]
    assert readme[-1] == follow_up(None)  # the temporary store is gone; --data keeps it
    config = earlier / DEMO_CONFIG
    assert printed[-1].startswith(f"see them again: segwatch anomalies --config {config} ")
    assert f'dsn: "chdb://{earlier}"' in config.read_text()  # this store, not the copied one
    valid = subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "validate", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert valid.returncode == 0, valid.stderr
    counts = "0 models, 0 contexts, 0 baselines, 0 expected biases"
    assert valid.stdout == f"{config}: valid ({counts})\n"
    listed = subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "anomalies", "--state", "open",
         "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    table = json.loads(listed.stdout)
    opened = {tuple(row[table["columns"].index(c)] for c in ("detector", "quantity"))
              for row in table["rows"]}  # fmt: skip
    assert opened == {("psi_drift", "output.score"), ("psi_drift", "feature.amount"),
                      ("data_range", "feature.amount")}  # fmt: skip
    # One fault, one incident: its root the amount out of range, the rest follow from it.
    column = {name: i for i, name in enumerate(table["columns"])}
    assert len({row[column["incident"]] for row in table["rows"]}) == 1
    roles = [(row[column["role"]], row[column["detector"]], row[column["quantity"]])
             for row in table["rows"]]  # fmt: skip
    assert roles[0] == ("root", "data_range", "feature.amount")
    assert sorted(roles[1:]) == [("consequence", "psi_drift", "feature.amount"),
                                 ("consequence", "psi_drift", "output.score")]  # fmt: skip
    text = subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "anomalies", "--state", "open",
         "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert text.stdout.count("└ consequence") == 2, text.stdout
    stranger = tmp_path / "not-a-demo"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine\n")
    (stranger / DEMO_CONFIG).write_text("storage:\n  dsn: chdb:///elsewhere\n")
    refused = subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "demo", "--data", str(stranger)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "the directory is not empty and no earlier segwatch demo made it" in refused.stderr
    assert (stranger / "keep.txt").read_text() == "mine\n"
    assert (stranger / DEMO_CONFIG).read_text() == "storage:\n  dsn: chdb:///elsewhere\n"
