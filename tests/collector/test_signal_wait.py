"""SIGTERM stops a collector whichever of its threads the kernel hands the signal to.

Python runs a signal's handler on the main thread; a signal taken by another
thread (the engine's, gRPC's) only marks it pending. A main thread in an
untimed wait then slept on: a collector once ignored SIGTERM until killed (CI,
test_operations). The process here sends SIGTERM to one of its own other
threads, as the kernel may.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import signal, threading, time
from segwatch.collector.cli.collector_process import stop_on_signal, wait_for_signal

stop = stop_on_signal()
parked = threading.Event()

def other():
    parked.set()
    time.sleep(60)

thread = threading.Thread(target=other, daemon=True)
thread.start()
parked.wait()
threading.Timer(0.3, signal.pthread_kill, (thread.ident, signal.SIGTERM)).start()
{wait}
print("stopped", flush=True)
"""


def _run(wait: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(wait=wait)],
                          capture_output=True, text=True, timeout=20)  # fmt: skip


def test_a_signal_taken_by_another_thread_ends_the_wait() -> None:
    done = _run("wait_for_signal(stop)")
    assert (done.returncode, done.stdout) == (0, "stopped\n"), done.stderr


def test_an_untimed_wait_would_have_slept_through_it() -> None:
    """What the timed wait is for: the same signal, and a plain ``Event.wait()``."""
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", SCRIPT.format(wait="stop.wait()")],
                       capture_output=True, text=True, timeout=3)  # fmt: skip
