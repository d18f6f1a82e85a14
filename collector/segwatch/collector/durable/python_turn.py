"""``PYTHON_TURN``: the collector's Python-heavy steps take turns on one lock.

A request's decode (on a gRPC handler thread) and a flush's aggregation and row
building (on the flusher thread) hold the GIL but for short numpy calls. Run side
by side they gained nothing, since one Python thread runs at a time anyway, and
handed the GIL back and forth across the cores at every numpy call:
``bench/ingest.py`` measured 20.8-21.8 µs of CPU per span with two handlers
decoding at once, 18.9-19.5 with the decodes taking turns, 16.8-18.1 with the
flusher's steps taking turns with them too (README, Benchmarks). Taking turns,
each step runs to its end while the engine's threads (C++, without the GIL) use
the other core. What waits rather than computes stays outside: the spool's fsync,
backpressure, the engine's inserts (their row encoding, interleaved with the
engine's parsing, measured no better inside).

The flusher takes a turn per step (the aggregation, the raw-call rows, the span
rows), so a decode waits for one step at most; a handler whose turn does not come
within the back-pressure bound answers UNAVAILABLE (see the processor).

One lock for the process: collectors sharing a process (tests) take turns too.
Lock order: the turn is taken first and never while holding another lock; what
runs in it may take the aggregator's and the segmentation's own locks, which
never wait for the turn. So it cannot deadlock.
"""

from __future__ import annotations

import threading

__all__ = ["PYTHON_TURN"]

PYTHON_TURN = threading.Lock()
