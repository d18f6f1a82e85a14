"""segwatch.collector: the OTLP receiver, segmentation, aggregation, storage and CLI.

Importing the package loads nothing heavy: :func:`baseline` (a training set into a
baseline profile) is imported on first use, so the ``segwatch`` command of a base
install (the instrumentation only) can say what it needs instead of failing on numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segwatch.collector.profile.profiles import baseline

__all__ = ["baseline"]


def __getattr__(name: str) -> Any:
    if name == "baseline":
        from segwatch.collector.profile.profiles import baseline

        return baseline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
