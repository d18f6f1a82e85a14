"""Every benchmark the README names starts: ``python bench/<name>.py --help`` answers.

The benches are run by hand, not by the suite, so an import a refactoring broke
(a helper renamed in a module the bench imports) would otherwise show only when
someone next runs it. ``--help`` imports the whole script and parses no data.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if "__main__" in p.read_text("utf-8"))


def test_the_readme_names_every_bench() -> None:
    readme = (BENCH.parent / "README.md").read_text("utf-8")
    assert [s for s in SCRIPTS if f"bench/{s}" not in readme] == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_bench_answers_help(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True, text=True, timeout=120, cwd=BENCH.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: "), done.stdout[:200]
