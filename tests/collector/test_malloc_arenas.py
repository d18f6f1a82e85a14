"""The C allocator's arenas: every segwatch process caps glibc's at two (threads each
holding the memory they freed was part of the collector's RSS growth under load)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from segwatch.collector.cli.main import MALLOC_ARENAS

# Eight threads allocate at once, then glibc lists its arenas (malloc_stats, on stderr).
_THREADS = """
import ctypes, sys, threading
from segwatch.collector.cli.main import bound_malloc_arenas
print(bound_malloc_arenas() if sys.argv[1] == "bound" else None)
start = threading.Barrier(8)
def work():
    start.wait()
    kept = [bytearray(100_000) for _ in range(50)]
    start.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(mode: str, **env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _THREADS, mode],
        capture_output=True, text=True, check=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env,
    )  # fmt: skip
    return done.stdout.strip(), len(re.findall(r"^Arena \d+:", done.stderr, re.M))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas")
def test_threads_share_two_arenas_and_the_environment_wins() -> None:
    free_stdout, free = _arenas("free")
    bound_stdout, bound = _arenas("bound")
    assert (free_stdout, bound_stdout) == ("None", "True")
    assert free > MALLOC_ARENAS  # glibc's own default gives each of these threads one
    assert bound <= MALLOC_ARENAS
    said, arenas = _arenas("bound", MALLOC_ARENA_MAX="4")
    assert said == "False" and MALLOC_ARENAS < arenas <= 4
