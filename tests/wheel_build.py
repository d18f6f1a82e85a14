"""Building the checkout's wheel as a user's pip would (test_packaging.py, test_install.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``pip wheel`` of the checkout into ``directory`` with the dev environment's hatchling,
    with ``env`` added to the environment; the source tree is left as it was."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(directory), str(ROOT)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
