"""``segwatch explain``: what a config will track, and roughly what it will cost.

Segment counts are upper estimates: categories keep the top K plus MISSING and
``__other__``; log buckets assume values spread over six decades; linear
buckets, whose range the config does not say, are counted as 20. A global cross
(``segments.crosses``) is a dimension of each model that declares both of its
fields; under every other model a row says it is skipped there and which field
the model lacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from segwatch.clickhouse.detection import load_manifest
from segwatch.clickhouse.queries import QueryResult
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.detector_specs import configured_detectors
from segwatch.collector.config.fields import FieldConfig, ModelConfig, segment_dimensions

__all__ = ["ModelPlan", "detector_table", "explain_models"]

_ASSUMED_DECADES = 6
_ASSUMED_LINEAR_BUCKETS = 20


@dataclass(frozen=True)
class ModelPlan:
    model: str
    quantities: int
    dimensions: dict[str, int]  # dimension → estimated segments
    rows_per_hour: int


def estimated_segments(spec: FieldConfig, top_k: int) -> int:
    """Segments of one dimension, MISSING included (0: not a dimension)."""
    segments = spec.segments
    if segments.kind == "none":
        return 0
    if spec.type == "bool":
        return 3
    if segments.kind == "top":
        return segments.count + 2
    if segments.kind == "edges":
        return len(segments.edges) + 2
    if segments.kind == "quantiles":
        return segments.count + 1
    if segments.kind == "linear":
        return _ASSUMED_LINEAR_BUCKETS + 1
    if segments.kind == "log" or spec.type == "number":
        per_decade = math.log(10) / math.log(segments.base if segments.kind == "log" else 10)
        return math.ceil(_ASSUMED_DECADES * per_decade) + 3  # + zero, NaN, MISSING
    return top_k + 2  # auto or category


def _plan(name: str, model: ModelConfig, config: CollectorConfig) -> ModelPlan:
    top_k = config.segments.top_k
    quantities = {f"feature.{n}" for n in model.features}
    quantities |= {f"output.{n}" for n in model.outputs} | {f"metric.{n}" for n in model.metrics}
    dimensions: dict[str, int] = {}
    for field_name, spec in model.features.items():
        count = estimated_segments(spec, top_k)
        if count:
            dimensions[f"feature.{field_name}"] = count
    for context in model.contexts:
        count = estimated_segments(config.contexts.get(context, FieldConfig()), top_k)
        if count:
            dimensions[f"context.{context}"] = count
    for first, second in (*config.segments.crosses, *model.crosses):
        a = dimensions.get(f"feature.{first}") or dimensions.get(f"context.{first}")
        b = dimensions.get(f"feature.{second}") or dimensions.get(f"context.{second}")
        if a and b:
            dimensions[f"{first}×{second}"] = a * b
    per_minute = len(quantities)  # the whole model
    for dimension, count in dimensions.items():
        per_minute += count * (len(quantities) - (dimension in quantities))
    return ModelPlan(name, len(quantities), dimensions, per_minute * 60)


def explain_models(config: CollectorConfig) -> QueryResult:
    """One row per model and dimension, with the model's total first."""
    rows: list[list[object]] = []
    for name, model in sorted(config.models.items()):
        plan = _plan(name, model, config)
        segments = 1 + sum(plan.dimensions.values())
        rows.append([name, "(all)", segments, plan.quantities, plan.rows_per_hour])
        for dimension, count in plan.dimensions.items():
            rows.append([name, dimension, count, "", ""])
        rows.extend(_skipped_crosses(name, model, config))
    return QueryResult(
        ["model", "dimension", "segments", "quantities", "aggregate rows/hour"], rows
    )


def _skipped_crosses(name: str, model: ModelConfig, config: CollectorConfig) -> list[list[object]]:
    """A row for each global cross (``segments.crosses``) this model lacks a field of: the
    cross applies only in models declaring both fields
    (:func:`segwatch.collector.config.fields.models_crossing`)."""
    rows: list[list[object]] = []
    declared = segment_dimensions(model, config.contexts)
    for first, second in config.segments.crosses:
        lacking = [part for part in (first, second) if part not in declared]
        if lacking:
            rows.append([name, f"{first}×{second}", f"skipped: no {', '.join(lacking)}", "", ""])
    return rows


def detector_table(config: CollectorConfig) -> QueryResult:
    """The detectors the collector will run, with the config's overrides applied."""
    rows: list[list[object]] = []
    enabled = {spec.name for spec in configured_detectors(config)}
    for spec in configured_detectors(config):
        rows.append([
            spec.name, f"{spec.cadence // 60}m", f"{spec.window // 60}m",
            f"{spec.baseline // 60}m",
            ", ".join(f"{k}={v}" for k, v in sorted(spec.parameters.items())),
        ])  # fmt: skip
    for spec in load_manifest():
        if spec.name not in enabled:
            rows.append([spec.name, "disabled", "", "", ""])
    return QueryResult(["detector", "cadence", "window", "baseline", "parameters"], rows)
