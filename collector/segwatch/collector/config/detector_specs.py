"""The manifest's detectors as this config runs them: its overrides, and the
parameters it derives (expected biases and sensitive dimensions for ``bias``, labels
for ``performance``, each model's profile for ``psi_drift_training``)."""

from __future__ import annotations

import dataclasses

from segwatch.clickhouse.detection import DetectorSpec, load_manifest
from segwatch.clickhouse.lifecycle import Persistence

from .collector_config import CollectorConfig
from .detectors import DetectorConfig
from .fields import ModelConfig

__all__ = [
    "DEFAULT_PROFILE",
    "configured_detectors",
    "expected_biases_parameter",
    "labels_parameter",
    "model_profiles",
    "profiles_parameter",
    "sensitive_dimensions_parameter",
]

DEFAULT_PROFILE = "training"
"""The profile a model without ``baseline`` is compared with (``segwatch baseline``'s
default ``--name``)."""


def expected_biases_parameter(config: CollectorConfig) -> str:
    """The config's expected biases as the bias detector reads them: one
    ``model<TAB>segment dimension<TAB>quantity`` per line (quantity empty: all)."""
    lines = []
    for bias in config.expected_biases:
        model = config.models.get(bias.model, ModelConfig())
        prefix = "context" if bias.dimension in model.contexts else "feature"
        for quantity in bias.quantities or ("",):
            lines.append(f"{bias.model}\t{prefix}.{bias.dimension}\t{quantity}")
    return "\n".join(lines)


def model_profiles(config: CollectorConfig) -> dict[str, tuple[str, str | None]]:
    """(profile name, pinned version or ``None``) of each model whose config names a
    ``baseline``; every other model is compared with :data:`DEFAULT_PROFILE`."""
    chosen: dict[str, tuple[str, str | None]] = {}
    for name, model in sorted(config.models.items()):
        baseline = config.baselines.get(model.baseline) if model.baseline else None
        if baseline is not None:
            chosen[name] = (baseline.profile, baseline.version)
    return chosen


def profiles_parameter(config: CollectorConfig) -> str:
    """:func:`model_profiles` as the training detectors read them (windows_profile.sql):
    one ``model<TAB>profile<TAB>pinned<TAB>version`` per line, ``pinned`` 1 when the
    baseline names a version (then every live version reads that version's profile)."""
    return "\n".join(
        f"{model}\t{profile}\t{int(version is not None)}\t{version or ''}"
        for model, (profile, version) in model_profiles(config).items()
    )


def sensitive_dimensions_parameter(config: CollectorConfig) -> str:
    """The fields declared ``sensitive: true`` as the bias detector reads them: one
    ``model<TAB>segment dimension`` per line, model empty for every model (a context
    under ``contexts`` is a field any model's calls may carry)."""
    lines = [
        f"\tcontext.{name}" for name, spec in sorted(config.contexts.items()) if spec.sensitive
    ]
    for model_name, model in sorted(config.models.items()):
        lines.extend(
            f"{model_name}\tfeature.{name}"
            for name, spec in sorted(model.features.items())
            if spec.sensitive
        )
    return "\n".join(lines)


def labels_parameter(config: CollectorConfig) -> str:
    """The config's labels as the performance detector reads them: one
    ``model<TAB>label<TAB>kind<TAB>prediction<TAB>score<TAB>positive<TAB>threshold``
    per line, names as stored (``label.x``, ``output.y``; empty when not given)."""
    lines = []
    for model_name, model in sorted(config.models.items()):
        for name, label in sorted(model.labels.items()):
            fields = [
                model_name,
                f"label.{name}",
                label.kind,
                f"output.{label.prediction}" if label.prediction else "",
                f"output.{label.score}" if label.score else "",
                label.positive,
                repr(label.threshold),
            ]
            lines.append("\t".join(fields))
    return "\n".join(lines)


def configured_detectors(config: CollectorConfig) -> list[DetectorSpec]:
    """The manifest's detectors with the config's overrides, the disabled ones left out.

    ``segments.min_segment_size`` is every detector's ``min_support`` unless a
    detector's own config says otherwise.
    """
    specs: list[DetectorSpec] = []
    for spec in load_manifest():
        override = config.detectors.get(spec.name, DetectorConfig())
        if not override.enabled:
            continue
        parameters = dict(spec.parameters)
        if "min_support" in parameters:
            parameters["min_support"] = config.segments.min_segment_size
        if "expected_biases" in parameters:
            parameters["expected_biases"] = expected_biases_parameter(config)
        if "sensitive_dimensions" in parameters:
            parameters["sensitive_dimensions"] = sensitive_dimensions_parameter(config)
        if "labels" in parameters:
            parameters["labels"] = labels_parameter(config)
        if "profiles" in parameters:
            parameters["profiles"] = profiles_parameter(config)
        parameters.update(override.parameters)
        specs.append(dataclasses.replace(
            spec,
            cadence=override.cadence or spec.cadence,
            window=override.window or spec.window,
            baseline=override.baseline or spec.baseline,
            delay=override.delay or spec.delay,
            persistence=Persistence(*override.persistence) if override.persistence
                        else spec.persistence,
            parameters=parameters,
        ))  # fmt: skip
    return specs
