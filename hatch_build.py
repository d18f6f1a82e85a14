"""Build hook: compile the collector's C loops (collector/segwatch/collector/_kernels.c).

The library is plain C loaded with ctypes (no Python API), so one build
serves every Python 3 on the platform: the wheel is tagged
``py3-none-<platform>``.

**Compiler and flags.** ``$CC`` (else the compiler Python was built with),
``$CFLAGS`` and ``$LDFLAGS`` are honoured, as distributions and CI images set
them. The flags the numbers depend on come after ``$CFLAGS`` so it cannot undo
them: ``-ffp-contract=off`` (no fused multiply-add: the C sums must equal
numpy's bit for bit) and ``-fno-fast-math`` (no reordered sums, infinities
kept).

**No compiler.** A wheel without the loops would still work, several times
slower, and pip shows a build hook's warnings only with ``-v``: nobody would
see it. So a failed compile fails the build, with a message that says what
to do: install a C compiler, or set ``SEGWATCH_NO_KERNELS=1`` to build the
pure-Python wheel on purpose (the collector then aggregates with numpy, same
numbers; a service that only uses ``segwatch.instrumentation`` never runs
the loops at all).

**Platform tag.** A package index accepts ``manylinux`` wheels, not
``linux_x86_64`` ones. The usual way is ``auditwheel repair``, which copies
every shared library the wheel needs into it and retags it. Here there is
nothing to copy: the library links only the C library (``libc``, ``libm``),
which every glibc system has, so the tag can be stated honestly at build
time instead: ``manylinux_2_X_<arch>``, where 2.X is the newest
``GLIBC_2.X`` symbol version the built ``.so`` needs (read from its ELF
version-needs section, below), but never older than 2.17 (manylinux2014,
the oldest policy with maintained build images: a claim about older systems
nobody builds on would not be tested anywhere). The wheel then installs on
any glibc at least that new, whichever glibc built it. A library that needs
anything else (an extra ``-l`` in ``$LDFLAGS``), or a non-glibc platform
(musl, macOS), gets the build machine's own platform tag, as before, and a
warning on Linux: repair that wheel with auditwheel before uploading it.
``tests/test_packaging.py`` checks the tag against ``auditwheel show``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import struct
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("collector/segwatch/collector/_kernels.c")
OPTIMIZE = ["-O3", "-std=c99"]
"""Defaults that ``$CFLAGS`` may override (e.g. ``-O2 -g`` of a distribution's build)."""
REQUIRED = ["-fno-fast-math", "-ffp-contract=off", "-shared", "-fPIC"]
"""After ``$CFLAGS``: the numbers and the library's form depend on these (``-ffp-contract=off``
after ``-fno-fast-math``: older clang resets fp-contract with the latter)."""
NO_KERNELS = "SEGWATCH_NO_KERNELS"
"""Set to 1: build without the compiled loops (a pure-Python wheel; the collector uses numpy)."""

OLDEST_GLIBC = (2, 17)
"""The oldest glibc a tag claims (manylinux2014)."""
GLIBC_LIBRARIES = re.compile(r"(libc|libm|libdl|libpthread|librt)\.so\.\d+|ld-linux.*\.so\.\d+")
"""What a manylinux wheel may link without carrying it: glibc's own libraries."""
LEGACY_ALIASES = {
    (2, 17): ("manylinux2014", {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"})
}
"""PEP 599's name for manylinux_2_17, which pip before 20.3 reads instead."""


def compile_kernels(root: Path, target: Path) -> Path:
    """Compile ``_kernels.c`` into ``target``; the path of the library (raises on failure)."""
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    cflags = shlex.split(os.environ.get("CFLAGS", ""))
    ldflags = shlex.split(os.environ.get("LDFLAGS", ""))
    command = [*compiler, *OPTIMIZE, *cflags, *REQUIRED, "-o", str(target), str(root / SOURCE)]
    subprocess.run([*command, *ldflags, "-lm"], check=True, capture_output=True, text=True)
    return target


def elf_needs(library: Path) -> tuple[list[str], set[str]]:
    """The shared libraries an ELF file needs (``DT_NEEDED``), and the symbol versions it
    needs from them (``.gnu.version_r``: e.g. ``GLIBC_2.14``). ValueError if not ELF."""
    data = library.read_bytes()
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{library} is not an ELF file")
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    header = order + ("HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH")
    fields = struct.unpack_from(header, data, 16)
    shoff, shentsize, shnum = fields[5], fields[10], fields[11]
    section = order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
    sections = [struct.unpack_from(section, data, shoff + i * shentsize) for i in range(shnum)]

    def string(table: int, at: int) -> str:
        start = sections[table][4] + at
        return data[start : data.index(b"\0", start)].decode()

    needed: list[str] = []
    versions: set[str] = set()
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind == 6:  # SHT_DYNAMIC: (tag, value) pairs, DT_NEEDED = 1
            pair = order + ("qQ" if wide else "iI")
            for i in range(0, size, entsize):
                tag, value = struct.unpack_from(pair, data, offset + i)
                if tag == 1:
                    needed.append(string(link, value))
        elif kind == 0x6FFFFFFE:  # SHT_GNU_verneed: Elf_Verneed, each with its Elf_Vernaux
            entry = offset
            while True:
                _, count, _, aux, following = struct.unpack_from(order + "HHIII", data, entry)
                at = entry + aux
                for _ in range(count):
                    _, _, _, name, after = struct.unpack_from(order + "IHHII", data, at)
                    versions.add(string(link, name))
                    at += after
                if not following:
                    break
                entry += following
    return needed, versions


def manylinux_tag(library: Path, arch: str) -> str | None:
    """The honest ``manylinux_2_X_<arch>`` platform tag of ``library`` (with PEP 599's alias
    where there is one), or None when it needs anything besides glibc."""
    needed, versions = elf_needs(library)
    glibc = [re.fullmatch(r"GLIBC_2\.(\d+)(\.\d+)*", v) for v in versions]
    # Anything else is not for manylinux: GCC_3.0 (libgcc_s), GLIBC_PRIVATE, another library.
    if not all(glibc) or not all(GLIBC_LIBRARIES.fullmatch(n) for n in needed):
        return None
    minor = max([OLDEST_GLIBC[1], *(int(m[1]) for m in glibc if m)])
    tag = f"manylinux_2_{minor}_{arch}"
    alias, arches = LEGACY_ALIASES.get((2, minor), ("", set()))
    return f"{tag}.{alias}_{arch}" if arch in arches else tag


class KernelsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compiles the loops into the wheel (or beside the source, for an editable install)."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if os.environ.get(NO_KERNELS, "") not in ("", "0"):
            self.app.display_warning(f"segwatch: {NO_KERNELS} is set: building without {SOURCE}")
            return
        source = Path(self.root) / SOURCE
        if version == "editable":  # imported from the source tree, beside its source
            target = source.with_name("_kernels.so")
        else:  # built apart: a wheel build leaves the source tree (and its .so) alone
            self._scratch = tempfile.mkdtemp(prefix="segwatch-kernels-")
            target = Path(self._scratch) / "_kernels.so"
        try:
            library = compile_kernels(Path(self.root), target)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = (getattr(exc, "stderr", "") or str(exc)).strip()
            self.finalize(version, build_data, "")  # abort ends the build: no finalize
            self.app.abort(
                f"segwatch: cannot compile {SOURCE}: {detail}\n"
                "Install a C compiler (e.g. apt-get install gcc; or point CC at one), or set "
                f"{NO_KERNELS}=1 to install without the compiled loops: the collector then "
                "aggregates with numpy, several times slower, same results (the "
                "instrumentation never uses them)."
            )
            return
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-{self._platform_tag(library)}"
        if version != "editable":
            build_data["force_include"][str(library)] = "segwatch/collector/_kernels.so"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if getattr(self, "_scratch", None):
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _platform_tag(self, library: Path) -> str:
        from packaging.tags import platform_tags

        tags = list(platform_tags())
        if not any(t.startswith("manylinux_") for t in tags):  # not glibc Linux: musl, macOS
            return next((t for t in tags if t.startswith("musllinux_")), tags[0])
        linux = next(t for t in tags if t.startswith("linux_"))  # the arch as pip names it
        tag = manylinux_tag(library, linux.removeprefix("linux_"))
        if tag is None:
            self.app.display_warning(
                f"segwatch: {library.name} needs more than glibc {elf_needs(library)}: the wheel "
                f"is tagged {linux}; repair it with auditwheel before uploading it"
            )
            return linux
        return tag
