"""The wheel: one `segwatch` namespace over three source roots, SQL included."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_holds_the_three_subpackages_and_the_sql(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("segwatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "segwatch/__init__.py" not in names  # PEP 420 namespace package
    for expected in [
        "segwatch/instrumentation/__init__.py",
        "segwatch/instrumentation/py.typed",
        "segwatch/collector/cli/main.py",
        "segwatch/collector/decode/fast_reader.py",
        "segwatch/collector/py.typed",
        "segwatch/clickhouse/migrations/0001_segment_aggregates.sql",
        "segwatch/clickhouse/detectors/manifest.yaml",
        "segwatch/clickhouse/detectors/psi_drift.sql",
        "segwatch/clickhouse/detectors/statistics.sql",
        "segwatch/clickhouse/detectors/fdr.sql",
    ]:
        assert expected in names
    assert not any(n.startswith(("tests/", "bench/", "instrumentation/")) for n in names)
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    base = [
        line
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    # The base install is what a service needs: no collector dependency.
    assert all(
        not any(h in line for h in ("chdb", "clickhouse", "numpy", "grpcio")) for line in base
    ), base
