"""The wheel: one `segwatch` namespace over three source roots, SQL included, the compiled
loops inside under a platform tag a package index accepts; how the build hook fails."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from wheel_build import build_wheel


def test_wheel_holds_the_three_subpackages_and_the_sql(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "segwatch/__init__.py" not in names  # PEP 420 namespace package
    for expected in [
        "segwatch/instrumentation/__init__.py",
        "segwatch/instrumentation/py.typed",
        "segwatch/collector/cli/main.py",
        "segwatch/collector/decode/fast_reader.py",
        "segwatch/collector/py.typed",
        "segwatch/collector/_kernels.so",
        "segwatch/clickhouse/migrations/0001_segment_aggregates.sql",
        "segwatch/clickhouse/detectors/manifest.yaml",
        "segwatch/clickhouse/detectors/psi_drift.sql",
        "segwatch/clickhouse/detectors/statistics.sql",
        "segwatch/clickhouse/detectors/fdr.sql",
        "segwatch-0.1.0.dist-info/licenses/LICENSE",
    ]:
        assert expected in names
    assert not any(n.startswith(("tests/", "bench/", "instrumentation/")) for n in names)
    # Every SQL and YAML file the code loads with importlib.resources (detectors,
    # migrations, the report's reads, the shared queries) ships in the wheel.
    root = Path(__file__).resolve().parents[1]
    for folder in ("collector", "clickhouse", "instrumentation"):
        for path in (root / folder).rglob("*"):
            if path.suffix in (".sql", ".yaml"):
                assert str(path.relative_to(root / folder)) in names, path
    metadata = zipfile.ZipFile(wheel).read("segwatch-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    base = [
        line
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    # What a service needs (tests/test_install.py resolves it for real).
    assert [line.split()[1].split(">")[0] for line in base] == [
        "opentelemetry-api",
        "opentelemetry-instrumentation",
        "wrapt",
    ]


def test_the_wheel_is_tagged_manylinux_as_auditwheel_sees_it(wheel: Path) -> None:
    """The tag states the oldest glibc the library runs on; auditwheel, reading the same
    library, must find it consistent with a tag at least as old, and no library to bundle."""
    if not sys.platform.startswith("linux"):
        pytest.skip("manylinux tags are for Linux")
    match = re.fullmatch(
        r"segwatch-0\.1\.0-py3-none-manylinux_2_(\d+)_(\w+?)(\..+)?\.whl", wheel.name
    )
    assert match, wheel.name
    claimed = int(match[1])
    assert claimed >= 17
    tags = zipfile.ZipFile(wheel).read("segwatch-0.1.0.dist-info/WHEEL").decode()
    assert f"Tag: py3-none-manylinux_2_{claimed}_{match[2]}" in tags
    shown = subprocess.run(
        [Path(sys.executable).with_name("auditwheel"), "show", str(wheel)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    text = " ".join(shown.stdout.split())
    assert "requires no external shared libraries" in text, text
    (consistent,) = re.findall(
        r'consistent with the following platform tag: "manylinux_2_(\d+)_', text
    )
    assert int(consistent) <= claimed, text


def test_without_a_compiler_the_build_stops_and_says_what_to_do(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"  # where the build hook makes its scratch directory
    temporary.mkdir()
    built = build_wheel(tmp_path, CC=str(tmp_path / "no-such-cc"), TMPDIR=str(temporary))
    assert built.returncode != 0
    output = built.stdout + built.stderr
    assert "segwatch: cannot compile collector/segwatch/collector/_kernels.c" in output
    assert "Install a C compiler" in output and "SEGWATCH_NO_KERNELS=1" in output
    assert not list(tmp_path.glob("*.whl"))
    assert not list(temporary.glob("segwatch-kernels-*"))  # the failed build left none behind


def test_segwatch_no_kernels_builds_the_pure_python_wheel(tmp_path: Path) -> None:
    built = build_wheel(tmp_path, SEGWATCH_NO_KERNELS="1", CC=str(tmp_path / "no-such-cc"))
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name == "segwatch-0.1.0-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "segwatch/collector/kernels.py" in names
    assert "segwatch/collector/_kernels.so" not in names


@pytest.mark.parametrize(
    ("variable", "flag", "complaint"),
    [
        ("CFLAGS", "-fsegwatch-no-such-option", "-fsegwatch-no-such-option"),
        ("LDFLAGS", "-Wl,--segwatch-no-such-option", "--segwatch-no-such-option"),
    ],
)
def test_cflags_and_ldflags_reach_the_compiler(
    tmp_path: Path, variable: str, flag: str, complaint: str
) -> None:
    """Each goes on the command line: an option the compiler (or linker) refuses shows it."""
    built = build_wheel(tmp_path, **{variable: flag})
    assert built.returncode != 0
    assert complaint in built.stdout + built.stderr


def test_a_library_that_needs_more_than_glibc_is_not_tagged_manylinux(tmp_path: Path) -> None:
    """libgcc_s is not glibc: the wheel gets this machine's own tag, for auditwheel to repair."""
    if not sys.platform.startswith("linux"):
        pytest.skip("manylinux tags are for Linux")
    built = build_wheel(tmp_path, LDFLAGS="-Wl,--no-as-needed -lgcc_s")
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert re.fullmatch(r"segwatch-0\.1\.0-py3-none-linux_\w+\.whl", wheel.name), wheel.name
