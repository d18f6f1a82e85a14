"""`segwatch demo`, the main job, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_finds_the_injected_segment_and_nothing_else(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "segwatch.collector.cli",
            "demo",
            "--data",
            str(tmp_path / "d"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    segment = table["columns"].index("segment")
    model = table["columns"].index("model")
    found = {(row[model], row[segment]) for row in table["rows"]}
    assert found == {("fraud", "feature.country=BR")}
    # Progress goes to stderr with --json, and says what happened.
    assert "simulated  75/75 minutes" in result.stderr
    assert "found the injected drift" in result.stderr
