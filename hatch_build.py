"""Build hook: compile the aggregator's C loops (collector/segwatch/collector/_kernels.c).

The library is plain C loaded with ctypes (no Python API), so one build
serves every Python 3 on the platform: the wheel is tagged
``py3-none-<platform>``. Without a C compiler the build goes on with a
warning and the collector aggregates with numpy instead (slower, same
numbers); ``segwatch.collector.kernels.COMPILED`` tells which.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("collector/segwatch/collector/_kernels.c")
# No fused multiply-add: the C sums must equal numpy's bit for bit.
FLAGS = ["-O3", "-std=c99", "-shared", "-fPIC", "-ffp-contract=off"]


def compile_kernels(root: Path) -> Path:
    """Compile ``_kernels.c`` next to itself; the path of the library (raises on failure)."""
    source = root / SOURCE
    target = source.with_name("_kernels.so")
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    command = [*compiler, *FLAGS, "-o", str(target), str(source), "-lm"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return target


class KernelsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        try:
            library = compile_kernels(Path(self.root))
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            self.app.display_warning(
                f"segwatch: cannot compile {SOURCE} ({detail.strip()}); the collector will "
                "aggregate with numpy, several times slower"
            )
            return
        from packaging.tags import platform_tags

        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-{next(platform_tags())}"
        if version != "editable":  # an editable install imports it from the source tree
            build_data["force_include"][str(library)] = "segwatch/collector/_kernels.so"
