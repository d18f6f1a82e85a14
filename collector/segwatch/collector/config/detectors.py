"""The ``baselines``, ``expected_biases``, ``detectors`` and ``scheduler`` sections.

What the models are compared with, which differences are expected, and how
the manifest's detectors (:mod:`segwatch.clickhouse.detection`) are tuned
for this deployment. :mod:`.detector_specs` applies the overrides.

``baselines.<name>`` names a loaded profile (``kind: training``, the only kind):
``models.<m>.baseline: <name>`` makes ``psi_drift_training`` compare model ``m``
with it (:func:`~.detector_specs.profiles_parameter`). The kinds that once stood
beside it (``trailing``, ``same_hour_last_week``, ``version``) and ``window`` did
nothing: each is refused with the detector setting that does what it meant
(:data:`REMOVED_BASELINE_KINDS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segwatch.clickhouse.detection import parse_duration
from segwatch.clickhouse.yaml_schema import (
    ListOf,
    MapOf,
    Problems,
    Record,
    Scalar,
    at_least,
    between,
)

from . import checks

__all__ = [
    "BASELINES_SCHEMA",
    "DETECTORS_SCHEMA",
    "EXPECTED_BIASES_SCHEMA",
    "REMOVED_BASELINE_KINDS",
    "SCHEDULER_SCHEMA",
    "BaselineConfig",
    "DetectorConfig",
    "ExpectedBias",
    "SchedulerConfig",
    "build_baselines",
    "build_detectors",
    "build_expected_biases",
]


@dataclass(frozen=True)
class BaselineConfig:
    """A loaded profile a model is compared with (``models.<m>.baseline``).

    ``profile``: the name it was loaded under (``segwatch baseline --name``);
    ``version``: the profile of that model version (``--version``) for every
    live version; ``None``: each live version's own profile when one is loaded,
    else the profile loaded without a version.
    """

    profile: str
    version: str | None = None


REMOVED_BASELINE_KINDS = {
    "trailing": "the trailing window is psi_drift's own baseline: set "
    "detectors.psi_drift.baseline (e.g. 2h; metric_shift's is detectors.metric_shift.baseline)",
    "same_hour_last_week": "metric_shift_seasonal compares every model with the same hour "
    "last week: tune it under detectors.metric_shift_seasonal",
    "version": "version_drift compares each version with the champion "
    "(detectors.version_drift.parameters.champion_stage); to compare with the profile of "
    "a version, use kind: training with version",
}
"""Baseline kinds that did nothing (no detector read them), and what to use instead."""


def _baseline_kind(kind: str) -> None:
    if kind in REMOVED_BASELINE_KINDS:
        raise ValueError(f"kind {kind!r} is no longer a baseline kind: "
                         f"{REMOVED_BASELINE_KINDS[kind]}")  # fmt: skip
    if kind != "training":
        raise ValueError(f"must be training, not {kind!r}")


def _removed_window(_: str) -> None:
    raise ValueError(
        "window is no longer a baseline key (it belonged to kind: trailing): "
        + REMOVED_BASELINE_KINDS["trailing"]
    )


@dataclass(frozen=True)
class ExpectedBias:
    """``dimension`` may move ``quantities`` (all, when empty) of ``model``: not an anomaly."""

    model: str
    dimension: str
    quantities: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectorConfig:
    enabled: bool = True
    cadence: int | None = None
    window: int | None = None
    baseline: int | None = None
    delay: int | None = None
    persistence: tuple[int, int] | None = None  # (found, windows)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulerConfig:
    enabled: bool = True


BASELINES_SCHEMA = MapOf(Record({
    "kind": Scalar(str, _baseline_kind),
    "profile": Scalar(str, checks.field_name),
    "version": Scalar(str),
    "window": Scalar(str, _removed_window),
}), checks.field_name)  # fmt: skip

EXPECTED_BIASES_SCHEMA = ListOf(Record({
    "model": Scalar(str),
    "dimension": Scalar(str),
    "quantities": ListOf(Scalar(str)),
}))  # fmt: skip

DETECTORS_SCHEMA = MapOf(Record({
    "enabled": Scalar(bool),
    "cadence": Scalar(str, checks.detector_duration),
    "window": Scalar(str, checks.detector_duration),
    "baseline": Scalar(str, checks.detector_duration),
    "delay": Scalar(str, checks.detector_duration),
    "persistence": Record({"found": Scalar(int, between(1, 100)),
                           "windows": Scalar(int, between(1, 100))}),
    "threshold": Scalar((int, float), at_least(0)),
    "min_support": Scalar(int, at_least(1)),
    "parameters": MapOf(Scalar((int, float, str)), checks.identifier),
}))  # fmt: skip

SCHEDULER_SCHEMA = Record({"enabled": Scalar(bool)})


def build_baselines(spec: dict[str, Any]) -> dict[str, BaselineConfig]:
    """Each baseline's profile: ``profile``, else the baseline's own name."""
    return {
        name: BaselineConfig(profile=baseline.get("profile", name), version=baseline.get("version"))
        for name, baseline in spec.items()
    }


def build_expected_biases(spec: list[dict[str, Any]]) -> tuple[ExpectedBias, ...]:
    return tuple(
        ExpectedBias(b.get("model", ""), b.get("dimension", ""), tuple(b.get("quantities", ())))
        for b in spec
    )


def build_detectors(spec: dict[str, Any], problems: Problems) -> dict[str, DetectorConfig]:
    """The overrides by detector name (the names are checked against the manifest later)."""
    return {
        name: DetectorConfig(
            enabled=detector.get("enabled", True),
            cadence=_seconds(detector, "cadence"),
            window=_seconds(detector, "window"),
            baseline=_seconds(detector, "baseline"),
            delay=_seconds(detector, "delay"),
            persistence=_persistence(f"detectors.{name}", detector.get("persistence"), problems),
            parameters={
                **detector.get("parameters", {}),
                **{k: detector[k] for k in ("threshold", "min_support") if k in detector},
            },
        )
        for name, detector in spec.items()
    }


def _seconds(spec: dict[str, Any], key: str) -> int | None:
    return parse_duration(spec[key]) if key in spec else None


def _persistence(path: str, spec: Any, problems: Problems) -> tuple[int, int] | None:
    """``{found: k, windows: n}``: an anomaly opens once found in k of the last n windows."""
    if spec is None:
        return None
    found, windows = spec.get("found", 1), spec.get("windows", 1)
    if found > windows:
        problems.at(f"{path}.persistence", f"found ({found}) cannot exceed windows ({windows})")
        return None
    return found, windows
