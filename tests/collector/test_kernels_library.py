"""Loading the compiled loops: only a library of the ABI the wrappers call, or none at all.

The loading happens at import, so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from segwatch.collector import kernels_library

SOURCE = Path(kernels_library.__file__).with_name("_kernels.c")


def test_the_declared_signatures_are_the_c_ones():
    """kernels_library.SIGNATURES tells ctypes each loop's arguments: as _kernels.c has them."""
    declared = {}
    for name, parameters in re.findall(
        r"^int64_t (segwatch_\w+)\(([^)]*)\)", SOURCE.read_text(), re.M
    ):
        arguments = [a for a in parameters.split(",") if a.strip() not in ("", "void")]
        declared[name] = "".join("p" if "*" in a else "i" for a in arguments)
        assert all("*" in a or a.split()[0] == "int64_t" for a in arguments), (name, arguments)
    assert declared.pop("segwatch_kernels_abi") == ""
    assert declared == kernels_library.SIGNATURES


def _load_in_subprocess(library: Path | None, mode: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_KERNELS")}
    env.update({"SEGWATCH_KERNELS_LIBRARY": str(library)} if library else {})
    env.update({"SEGWATCH_KERNELS": mode} if mode else {})
    code = "from segwatch.collector import kernels; print(kernels.COMPILED)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("abi", ["999", None])
def test_a_library_of_another_abi_is_not_called(tmp_path, abi):
    """A stale build (another ABI, or one from before the library said its ABI): numpy runs,
    and a warning names the file."""
    source = SOURCE.read_text()
    if abi is None:  # as _kernels.c was before it had segwatch_kernels_abi()
        source = re.sub(r"int64_t segwatch_kernels_abi\(void\) \{[^}]*\}", "", source)
    else:
        source = re.sub(
            r"#define SEGWATCH_KERNELS_ABI \d+", f"#define SEGWATCH_KERNELS_ABI {abi}", source
        )
    (tmp_path / "stale.c").write_text(source)
    library = tmp_path / "stale.so"
    compiler = os.environ.get("CC") or "cc"
    subprocess.run([compiler, "-shared", "-fPIC", "-std=c99", "-o", str(library),
                    str(tmp_path / "stale.c"), "-lm"], check=True)  # fmt: skip
    result = _load_in_subprocess(library, None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert str(library) in result.stderr
    assert (f"has ABI {abi}," if abi else "has no ABI version") in result.stderr
    assert f"not ABI {kernels_library.ABI}" in result.stderr


@pytest.mark.skipif(
    kernels_library.NUMPY_FORCED,
    reason="SEGWATCH_KERNELS=numpy: this run leaves the compiled loops off",
)
def test_the_current_library_is_called():
    result = _load_in_subprocess(None, None)
    assert result.returncode == 0, result.stderr
    assert (result.stdout.strip(), result.stderr) == ("True", "")


def test_segwatch_kernels_numpy_turns_the_compiled_loops_off():
    result = _load_in_subprocess(None, "numpy")
    assert (result.stdout.strip(), result.stderr) == ("False", "")
    result = _load_in_subprocess(None, "fast")  # a typo warns and runs as auto, no traceback
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert "SEGWATCH_KERNELS must be auto or numpy, not 'fast': using auto" in result.stderr
