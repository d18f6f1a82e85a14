"""The ``models``, ``contexts`` and ``segments`` sections: fields and how they split traffic.

A field is one feature, output, metric or context of a model's calls; its
:class:`SegmentSpec` says how it splits traffic into segments. A model also
declares its crosses, its baseline and its delayed labels.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from segwatch.clickhouse.yaml_schema import (
    Choice,
    ListOf,
    MapOf,
    Problems,
    Record,
    Scalar,
    at_least,
    between,
    one_of,
)

from . import checks

__all__ = [
    "MODELS_SCHEMA",
    "NAMED_FIELDS_SCHEMA",
    "SEGMENTS_SCHEMA",
    "FieldConfig",
    "LabelConfig",
    "ModelConfig",
    "SegmentSpec",
    "SegmentsConfig",
    "build_field",
    "build_model",
    "build_segments",
    "crossable_fields",
    "global_cross_dimensions",
    "global_cross_problem",
]


@dataclass(frozen=True)
class SegmentSpec:
    """How one field splits traffic into segments.

    ``kind``: ``auto`` (log decades for numbers, top K for categories),
    ``log`` (``base``), ``linear`` (``width``, ``origin``), ``edges``,
    ``quantiles`` (``count``, from the baseline), ``top`` (``count``) or
    ``none`` (not a segment dimension).
    """

    kind: str = "auto"
    base: float = 10.0
    width: float = 1.0
    origin: float = 0.0
    edges: tuple[float, ...] = ()
    count: int = 0


@dataclass(frozen=True)
class FieldConfig:
    type: str = "auto"  # number, category, bool or auto (inferred from the data)
    segments: SegmentSpec = field(default_factory=SegmentSpec)
    # Fairness monitoring: the bias detector reports this dimension's standing gaps
    # (and those of crosses including it), not only their changes. Features and contexts.
    sensitive: bool = False


@dataclass(frozen=True)
class LabelConfig:
    """How one delayed label (``ml.label.<name>``) grades the model's calls.

    ``classification``: the truth is a class; ``prediction`` names the output
    holding the predicted class (accuracy, precision, recall), ``score`` a
    numeric output scoring ``positive`` (AUC; with ``threshold`` it also
    predicts the class when there is no ``prediction``). ``regression``: the
    truth is a number, ``prediction`` the output estimating it (MAE, RMSE).
    """

    kind: str = "classification"
    prediction: str = ""
    score: str = ""
    positive: str = "true"
    threshold: float = 0.5


@dataclass(frozen=True)
class ModelConfig:
    features: dict[str, FieldConfig] = field(default_factory=dict)
    outputs: dict[str, FieldConfig] = field(default_factory=dict)
    metrics: dict[str, FieldConfig] = field(default_factory=dict)
    contexts: tuple[str, ...] = ()
    crosses: tuple[tuple[str, str], ...] = ()
    baseline: str | None = None
    labels: dict[str, LabelConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentsConfig:
    top_k: int = 20
    min_segment_size: int = 200
    crosses: tuple[tuple[str, str], ...] = ()
    # Segments one model may have; a dimension that would pass it is not segmented
    # (its values still count for the whole model). Bounds what a client can create.
    max_per_model: int = 5_000
    # Fields (features, outputs, metrics, contexts) one model may have: each multiplies the
    # rows every segment writes. Past it new fields are not aggregated; declared ones fit.
    max_fields_per_model: int = 500
    # Models one collector tracks; a request bringing more is refused. Each model keeps
    # state (its fields, their top values): clients inventing names must not grow it.
    max_models: int = 1_000


# -- the schema --------------------------------------------------------------

_NUMBER = Scalar((int, float))
_SEGMENTS = Choice({
    "log": Record({"base": Scalar((int, float), at_least(1, strictly=True))}),
    "linear": Record({"width": Scalar((int, float), at_least(0, strictly=True)),
                      "origin": _NUMBER}),
    "edges": ListOf(_NUMBER, min_len=1),
    "quantiles": Scalar(int, between(2, 100)),
    "top": Scalar(int, between(1, 10_000)),
})  # fmt: skip
_FIELD = Record({
    "type": Scalar(str, one_of("number", "category", "bool", "auto")),
    "segments": _SEGMENTS,
    "segment": Scalar(bool),
    "sensitive": Scalar(bool),
})  # fmt: skip
_CROSS = ListOf(Scalar(str), min_len=2, max_len=2)

NAMED_FIELDS_SCHEMA = MapOf(_FIELD, checks.field_name)
"""Fields by name: a model's features, outputs or metrics, and the shared ``contexts``."""

MODELS_SCHEMA = MapOf(Record({
    "features": NAMED_FIELDS_SCHEMA,
    "outputs": NAMED_FIELDS_SCHEMA,
    "metrics": NAMED_FIELDS_SCHEMA,
    "contexts": ListOf(Scalar(str, checks.field_name)),
    "crosses": ListOf(_CROSS),
    "baseline": Scalar(str),
    "labels": MapOf(Record({
        "kind": Scalar(str, one_of("classification", "regression")),
        "prediction": Scalar(str, checks.field_name),
        "score": Scalar(str, checks.field_name),
        "positive": Scalar((str, int, bool)),
        "threshold": _NUMBER,
    }), checks.field_name),
}), checks.field_name)  # fmt: skip

SEGMENTS_SCHEMA = Record({
    "top_k": Scalar(int, between(1, 10_000)),
    "min_segment_size": Scalar(int, at_least(1)),
    "max_per_model": Scalar(int, between(10, 10_000_000)),
    "max_models": Scalar(int, between(1, 1_000_000)),
    "max_fields_per_model": Scalar(int, between(1, 100_000)),
    "crosses": ListOf(_CROSS),
})  # fmt: skip


# -- building ----------------------------------------------------------------


def build_field(path: str, spec: dict[str, Any], problems: Problems) -> FieldConfig:
    """The field at YAML ``path``; what the schema alone cannot tell goes to ``problems``."""
    kind = spec.get("type", "auto")
    sensitive = bool(spec.get("sensitive", False))
    if spec.get("segment") is False:
        if sensitive:
            problems.at(f"{path}.sensitive", "a sensitive field must be a segment dimension, "
                        "not segment: false (its segments are what bias compares)")  # fmt: skip
        return FieldConfig(type=kind, segments=SegmentSpec(kind="none"), sensitive=sensitive)
    if "segments" not in spec:
        return FieldConfig(type=kind, sensitive=sensitive)
    ((how, value),) = spec["segments"].items()
    numeric_only = how in ("log", "linear", "edges", "quantiles")
    if numeric_only and kind in ("category", "bool"):
        problems.at(f"{path}.segments.{how}", f"{how} buckets need type: number, not {kind}")
    if how == "top" and kind == "number":
        problems.at(f"{path}.segments.top", "top K is for categories, not type: number")
    if how == "edges":
        try:
            checks.increasing(value)
        except ValueError as exc:
            problems.at(f"{path}.segments.edges", str(exc))
    segments = SegmentSpec(
        kind=how,
        base=float(value.get("base", 10)) if how == "log" else 10.0,
        width=float(value.get("width", 1)) if how == "linear" else 1.0,
        origin=float(value.get("origin", 0)) if how == "linear" else 0.0,
        edges=tuple(float(e) for e in value) if how == "edges" else (),
        count=int(value) if how in ("quantiles", "top") else 0,
    )
    if how == "linear" and "width" not in value:
        problems.at(f"{path}.segments.linear", "linear buckets need a width")
    return FieldConfig(type=kind, segments=segments, sensitive=sensitive)


def build_model(path: str, spec: dict[str, Any], problems: Problems) -> ModelConfig:
    for section in ("outputs", "metrics"):
        for name, field_spec in spec.get(section, {}).items():
            if field_spec.get("sensitive"):
                problems.at(
                    f"{path}.{section}.{name}.sensitive",
                    "only features and contexts can be sensitive: they are the dimensions "
                    "that split traffic",
                )
    return ModelConfig(
        features={n: build_field(f"{path}.features.{n}", f, problems)
                  for n, f in spec.get("features", {}).items()},
        outputs={n: build_field(f"{path}.outputs.{n}", f, problems)
                 for n, f in spec.get("outputs", {}).items()},
        metrics={n: build_field(f"{path}.metrics.{n}", f, problems)
                 for n, f in spec.get("metrics", {}).items()},
        contexts=tuple(spec.get("contexts", ())),
        crosses=tuple(tuple(c) for c in spec.get("crosses", ())),
        baseline=spec.get("baseline"),
        labels={n: _label(f"{path}.labels.{n}", label, problems)
                for n, label in spec.get("labels", {}).items()},
    )  # fmt: skip


def _label(path: str, spec: dict[str, Any], problems: Problems) -> LabelConfig:
    kind = spec.get("kind", "classification")
    if kind == "regression" and not spec.get("prediction"):
        problems.at(path, "a regression label needs prediction: the output estimating it")
    if kind == "classification" and not (spec.get("prediction") or spec.get("score")):
        problems.at(path, "a classification label needs prediction (the predicted class) "
                          "or score (the positive class's score)")  # fmt: skip
    positive = spec.get("positive", "true")
    return LabelConfig(
        kind=kind,
        prediction=spec.get("prediction", ""),
        score=spec.get("score", ""),
        # booleans are stored as true/false (segwatch.instrumentation.values)
        positive=str(positive).lower() if isinstance(positive, bool) else str(positive),
        threshold=float(spec.get("threshold", 0.5)),
    )


def build_segments(spec: dict[str, Any]) -> SegmentsConfig:
    return SegmentsConfig(
        top_k=spec.get("top_k", 20),
        min_segment_size=spec.get("min_segment_size", 200),
        crosses=tuple(tuple(c) for c in spec.get("crosses", ())),
        max_per_model=spec.get("max_per_model", SegmentsConfig.max_per_model),
        max_models=spec.get("max_models", SegmentsConfig.max_models),
        max_fields_per_model=spec.get("max_fields_per_model", SegmentsConfig.max_fields_per_model),
    )


# -- global crosses ------------------------------------------------------------
#
# One rule, read by validate (load.py), explain (cli/explain.py) and the collector
# (segment/plan.py): a global cross applies in every model that has both of its fields.
# A declared model has the features it declares and every context under ``contexts`` (a
# context is a field any model's calls may carry, listed by the model or not), but those
# with ``segment: false``; a model the config does not declare (learned from traffic) has
# whatever its calls carry.


def crossable_fields(model: ModelConfig, contexts: Mapping[str, FieldConfig]) -> dict[str, str]:
    """The fields a global cross can cross in declared ``model``, each with its dimension:
    its features that are segment dimensions (``feature.NAME``) and the contexts under
    ``contexts`` that are (``context.NAME``). A feature's name wins over a context's, as in
    the collector, which looks a crossed field up among features first."""
    fields = {
        name: f"context.{name}" for name, spec in contexts.items() if spec.segments.kind != "none"
    }
    fields.update(
        (name, f"feature.{name}")
        for name, spec in model.features.items()
        if spec.segments.kind != "none"
    )
    return fields


def global_cross_dimensions(
    cross: tuple[str, str], model: ModelConfig, contexts: Mapping[str, FieldConfig]
) -> tuple[str, str] | None:
    """The two dimensions a global cross crosses in declared ``model`` (``feature.country``,
    ``context.language``), or ``None`` where it is skipped: the model lacks a field of it.

    A context the model does not list is a dimension only of the calls that carry it: the
    cross applies to those.
    """
    fields = crossable_fields(model, contexts)
    first, second = fields.get(cross[0]), fields.get(cross[1])
    return (first, second) if first and second else None


def global_cross_problem(
    cross: tuple[str, str], models: Mapping[str, ModelConfig], contexts: Mapping[str, FieldConfig]
) -> str | None:
    """Why ``segwatch validate`` refuses a global cross, or ``None``.

    Refused: the same field twice, and, when models are declared, a field that is neither
    a feature of one of them nor a context under ``contexts`` (a typo: it could be crossed
    only in models the config does not declare). With no ``models`` every model is learned
    from traffic and there is nothing to check against. A field of one model only, or one
    with ``segment: false``, is no mistake: the cross is skipped where a field is lacking, as
    ``segwatch explain`` shows. The message names the field; the caller adds the cross's
    YAML path and line.
    """
    first, second = cross
    if first == second:
        return "a cross needs two different fields"
    if not models:
        return None
    declared = {name for model in models.values() for name in model.features} | set(contexts)
    unknown = [part for part in cross if part not in declared]
    if not unknown:
        return None

    def hint(part: str) -> str:
        close = difflib.get_close_matches(part, sorted(declared), n=1)
        return f"did you mean {close[0]!r}?" if close else ""

    if len(unknown) == 1:
        text = (
            f"{unknown[0]!r} is not a declared feature or context (no model under models "
            "has it as a feature, nor does contexts name it)"
        )
        hints = [hint(unknown[0])]
    else:
        text = (
            f"{unknown[0]!r} and {unknown[1]!r} are not declared features or contexts (no "
            "model under models has them as features, nor does contexts name them)"
        )
        hints = [f"for {part!r}, {hint(part)}" for part in unknown if hint(part)]
    return "; ".join([text, *filter(None, hints)])
