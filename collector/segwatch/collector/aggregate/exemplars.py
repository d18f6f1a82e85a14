"""ExemplarMemory: the exemplar each (segment, minute) group already has in ``otel_traces``.

An aggregate row keeps a group's exemplar trace id, and ``storage.traces``
writes that call's span so the id opens in a trace view. A group takes its
exemplar from the calls whose spans are written anyway (the trace-id sample)
when it has one; a small segment seldom has, so each flush used to write one
more span for it: 20 flushes a minute, 20 spans for one group-minute, of which
ClickHouse keeps five ids (``groupUniqArrayArray(5)``). With a memory, such a
group names the exemplar an earlier flush of the same minute wrote: still a
call of that segment in that minute, and no new span.

A flush's choices count only once its insert succeeded (:meth:`stage`, then
:meth:`commit` or :meth:`discard`): a flush set aside as a dead letter wrote
no span, so no later row may name one of its calls. Only the newest minutes
are kept (:data:`KEEP_SECONDS`), and at most :data:`MAX_GROUPS` groups.

Threads: one flusher uses it (the collector's :class:`FlushWriter`); no lock.
"""

from __future__ import annotations

__all__ = ["KEEP_SECONDS", "MAX_GROUPS", "ExemplarMemory", "GroupKey"]

GroupKey = tuple[str, str, str, str, str, int]
"""(model name, version, stage, dimension, segment, minute start in seconds)."""

KEEP_SECONDS = 180
"""Groups of minutes this much older than the newest seen are forgotten."""

MAX_GROUPS = 200_000
"""Past this many groups remembered, the memory starts over (a bound, not a cache policy)."""


class ExemplarMemory:
    """Per group, the trace id (hex) of an exemplar whose span a stored flush wrote."""

    def __init__(self) -> None:
        self._known: dict[GroupKey, str] = {}
        self._staged: dict[GroupKey, str] = {}
        self._newest = 0  # the newest minute seen, in seconds

    def __len__(self) -> int:
        return len(self._known)

    def recall(self, key: GroupKey) -> str | None:
        """The exemplar a stored flush gave this group, if any."""
        return self._known.get(key)

    def stage(self, key: GroupKey, trace_id: str) -> None:
        """This flush names ``trace_id`` as the group's exemplar (kept once committed)."""
        self._staged.setdefault(key, trace_id)

    def commit(self) -> None:
        """The staged flush is stored: remember its exemplars, forget old minutes."""
        staged, self._staged = self._staged, {}
        for key, trace_id in staged.items():
            self._known.setdefault(key, trace_id)
            self._newest = max(self._newest, key[5])
        horizon = self._newest - KEEP_SECONDS
        if len(self._known) > MAX_GROUPS:
            self._known = {}
        elif any(key[5] < horizon for key in self._known):
            self._known = {k: v for k, v in self._known.items() if k[5] >= horizon}

    def discard(self) -> None:
        """The staged flush was not stored: its exemplars are not remembered."""
        self._staged = {}
