"""``segwatch explain``: what a config will track, and roughly what it will cost.

Segment counts are upper estimates: categories keep the top K plus MISSING and
``__other__``; log buckets assume values spread over six decades; linear
buckets, whose range the config does not say, are counted as 20. A global cross
(``segments.crosses``) applies in each model that has both of its fields (its
features and the contexts: :func:`~segwatch.collector.config.fields.global_cross_dimensions`,
the rule the collector follows); a cross with a context the model does not list
applies to the calls that carry it, and a row says so; under a model lacking a
field a row says it is skipped there and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from segwatch.clickhouse.detection import load_manifest
from segwatch.clickhouse.queries import QueryResult
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.detector_specs import (
    DEFAULT_PROFILE,
    configured_detectors,
    model_profiles,
)
from segwatch.collector.config.fields import (
    FieldConfig,
    ModelConfig,
    crossable_fields,
    global_cross_dimensions,
)

__all__ = ["ModelPlan", "baseline_table", "detector_table", "explain_models"]

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
    for first, second in config.segments.crosses:
        pair = global_cross_dimensions((first, second), model, config.contexts)
        if pair and pair[0] in dimensions and pair[1] in dimensions:
            dimensions[f"{first}×{second}"] = dimensions[pair[0]] * dimensions[pair[1]]
    for first, second in model.crosses:
        a = dimensions.get(f"feature.{first}") or dimensions.get(f"context.{first}")
        b = dimensions.get(f"feature.{second}") or dimensions.get(f"context.{second}")
        if a and b:
            dimensions[f"{first}×{second}"] = a * b
    per_minute = len(quantities)  # the whole model
    for dimension, count in dimensions.items():
        per_minute += count * (len(quantities) - (dimension in quantities))
    return ModelPlan(name, len(quantities), dimensions, per_minute * 60)


def explain_models(config: CollectorConfig) -> QueryResult:
    """One row per model and dimension, with the model's total first; ``sensitive`` says
    which dimensions the bias detector checks for standing gaps (fields declared
    ``sensitive: true``, and crosses including one), not only for changes."""
    rows: list[list[object]] = []
    for name, model in sorted(config.models.items()):
        plan = _plan(name, model, config)
        segments = 1 + sum(plan.dimensions.values())
        rows.append([name, "(all)", segments, plan.quantities, plan.rows_per_hour, ""])
        for dimension, count in plan.dimensions.items():
            sensitive = _is_sensitive(dimension, model, config)
            rows.append([name, dimension, count, "", "", "yes" if sensitive else ""])
        rows.extend([*row, ""] for row in _partial_crosses(name, model, config))
    return QueryResult(
        ["model", "dimension", "segments", "quantities", "aggregate rows/hour", "sensitive"], rows
    )


def _is_sensitive(dimension: str, model: ModelConfig, config: CollectorConfig) -> bool:
    """Whether a dimension (``feature.x``, ``context.y``, or a cross ``x×y`` of field
    names, a feature's name winning over a context's) has a field declared sensitive."""
    for part in dimension.split("×"):
        kind, _, field_name = part.rpartition(".")
        in_features = kind == "feature" or (not kind and field_name in model.features)
        spec = (model.features if in_features else config.contexts).get(field_name)
        if spec is not None and spec.sensitive:
            return True
    return False


def _partial_crosses(name: str, model: ModelConfig, config: CollectorConfig) -> list[list[object]]:
    """A row for each global cross (``segments.crosses``) that is not a dimension of every
    call of this model: skipped, naming the field the model lacks and why, or made for the
    calls carrying a context the model does not list."""
    rows: list[list[object]] = []
    listed = set(model.contexts)
    for first, second in config.segments.crosses:
        shown = f"{first}×{second}"
        pair = global_cross_dimensions((first, second), model, config.contexts)
        if pair is None:
            lacking = [_lacking(part, model, config) for part in (first, second)]
            reasons = ", ".join(reason for reason in lacking if reason)
            rows.append([name, shown, f"skipped: {reasons}", "", ""])
            continue
        unlisted = [d.partition(".")[2] for d in pair if d.startswith("context.")]
        unlisted = [context for context in unlisted if context not in listed]
        if unlisted:
            carry = " and ".join(unlisted)
            rows.append([name, shown, f"in calls carrying {carry}", "", ""])
    return rows


def _lacking(part: str, model: ModelConfig, config: CollectorConfig) -> str | None:
    """Why a global cross cannot cross ``part`` in ``model``; ``None`` if it can."""
    if part in crossable_fields(model, config.contexts):
        return None
    if part in model.features or part in config.contexts:
        return f"{part} has segment: false"
    return f"no {part}"


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


def baseline_table(config: CollectorConfig) -> QueryResult:
    """Which loaded profile ``psi_drift_training`` compares each declared model with.

    explain reads no store: whether that profile is loaded is not known here (a
    model whose profile is not loaded gets no training comparison).
    """
    chosen = model_profiles(config)
    rows: list[list[object]] = []
    for name, model in sorted(config.models.items()):
        profile, version = chosen.get(name, (DEFAULT_PROFILE, None))
        versions = (
            "each live version's own, else the one loaded without a version"
            if version is None
            else f"the one of version {version}, for every live version"
        )
        rows.append([name, model.baseline or "(none)", profile, versions])
    return QueryResult(["model", "baseline", "profile", "profile versions"], rows)
