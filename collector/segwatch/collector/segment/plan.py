"""SegmentationPlan: what the config says about splitting each model's traffic.

Zero config works: a field nobody declared is a segment dimension with log
decades (numbers) or the top K values (text). The config only adds knowledge:
other buckets, another K, fields that are not dimensions, crosses.
"""

from __future__ import annotations

import threading

from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.fields import FieldConfig, SegmentSpec, global_cross_dimensions

from .buckets import EdgeBuckets, NumericBuckets, buckets_for

__all__ = ["SegmentationPlan"]

_DEFAULT = FieldConfig()
DEFAULT_QUANTILES = 10


class SegmentationPlan:
    """Per model and dimension (``feature.amount``, ``context.language``): how to segment.

    Thread-safe; bucketings are built once per (model, dimension).
    """

    def __init__(self, config: CollectorConfig | None = None) -> None:
        self.config = config or CollectorConfig()
        self._buckets: dict[tuple[str, str], NumericBuckets] = {}
        self._quantile_edges: dict[tuple[str, str], tuple[float, ...]] = {}
        self._lock = threading.Lock()

    def field(self, model: str, dimension: str) -> FieldConfig:
        kind, _, name = dimension.partition(".")
        if kind == "context":
            return self.config.contexts.get(name, _DEFAULT)
        model_config = self.config.models.get(model)
        if model_config is None:
            return _DEFAULT
        return model_config.features.get(name, _DEFAULT)

    def is_dimension(self, model: str, dimension: str) -> bool:
        return self.field(model, dimension).segments.kind != "none"

    def top_k(self, model: str, dimension: str) -> int:
        spec = self.field(model, dimension).segments
        return spec.count if spec.kind == "top" else self.config.segments.top_k

    def buckets(self, model: str, dimension: str) -> NumericBuckets:
        key = (model, dimension)
        found = self._buckets.get(key)
        if found is None:
            spec: SegmentSpec = self.field(model, dimension).segments
            edges = self._quantile_edges.get(key)
            if spec.kind in ("quantiles", "auto") and edges:
                built: NumericBuckets = EdgeBuckets(edges)
            else:
                built = buckets_for(spec)
            with self._lock:
                found = self._buckets.setdefault(key, built)
        return found

    def quantile_counts(self, fields: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """How many quantile buckets each (model, feature) of a baseline profile wants.

        ``quantiles: N`` fields want N; features the config leaves to ``auto``
        (zero config included) switch from log decades to baseline deciles.
        """
        counts: dict[tuple[str, str], int] = {}
        for model, quantity in fields:
            spec = self.field(model, quantity)
            if spec.segments.kind == "quantiles":
                counts[(model, quantity)] = spec.segments.count
            elif spec.segments.kind == "auto" and spec.type in ("auto", "number"):
                counts[(model, quantity)] = DEFAULT_QUANTILES
        return counts

    def use_quantile_edges(self, edges: dict[tuple[str, str], tuple[float, ...]]) -> None:
        """Bucket these numeric dimensions at a baseline's quantiles from now on.

        Their segment labels change with it (``[12.5, 40.1)`` instead of decades).
        """
        with self._lock:
            self._quantile_edges = dict(edges)
            for key in edges:
                self._buckets.pop(key, None)

    def declared_fields(self, model: str) -> set[str]:
        """The fields the config declares for ``model``, as quantity/dimension names."""
        model_config = self.config.models.get(model)
        if model_config is None:
            return set()
        return (
            {f"feature.{n}" for n in model_config.features}
            | {f"output.{n}" for n in model_config.outputs}
            | {f"metric.{n}" for n in model_config.metrics}
            | {f"context.{n}" for n in model_config.contexts}
        )

    def crosses(self, model: str, dimensions: set[str]) -> list[tuple[str, str]]:
        """The crosses to make in this batch of ``model``, whose segment dimensions are
        ``dimensions``: the model's own crosses and the global ones (``segments.crosses``)
        whose two fields are both among them.

        A global cross follows :func:`~segwatch.collector.config.fields.global_cross_dimensions`
        in a declared model (the fields it declares and the contexts, never a feature it
        does not declare, so ``segwatch explain`` tells where each applies); a model the
        config does not declare gets it whenever its calls carry both fields.
        """
        model_config = self.config.models.get(model)
        pairs: list[tuple[str | None, str | None]] = []
        for cross in self.config.segments.crosses:
            if model_config is None:
                pairs.append(_dimensions(cross, dimensions))
            else:
                pairs.append(
                    global_cross_dimensions(cross, model_config, self.config.contexts)
                    or (None, None)
                )
        if model_config is not None:
            pairs.extend(_dimensions(cross, dimensions) for cross in model_config.crosses)
        out: list[tuple[str, str]] = []
        for first, second in pairs:
            if first is None or second is None or (first, second) in out:
                continue
            if first in dimensions and second in dimensions:  # a context only when carried
                out.append((first, second))
        return out


def _dimensions(cross: tuple[str, str], dimensions: set[str]) -> tuple[str | None, str | None]:
    """A cross's two fields as dimensions of the batch (a feature before a context)."""
    return _dimension(cross[0], dimensions), _dimension(cross[1], dimensions)


def _dimension(field_name: str, dimensions: set[str]) -> str | None:
    for candidate in (f"feature.{field_name}", f"context.{field_name}"):
        if candidate in dimensions:
            return candidate
    return None
