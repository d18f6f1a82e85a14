"""segwatch.collector: the OTLP receiver, segmentation, aggregation, storage and CLI."""

from __future__ import annotations

from segwatch.collector.profile.profiles import baseline

__all__ = ["baseline"]
