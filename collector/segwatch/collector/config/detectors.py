"""The ``baselines``, ``expected_biases``, ``detectors`` and ``scheduler`` sections.

What the models are compared with, which differences are expected, and how
the manifest's detectors (:mod:`segwatch.clickhouse.detection`) are tuned
for this deployment. :mod:`.detector_specs` applies the overrides.
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
    one_of,
)

from . import checks

__all__ = [
    "BASELINES_SCHEMA",
    "DETECTORS_SCHEMA",
    "EXPECTED_BIASES_SCHEMA",
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
    kind: str  # trailing, same_hour_last_week, version, training
    window: int = 3600
    version: str | None = None


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
    "kind": Scalar(str, one_of("trailing", "same_hour_last_week", "version", "training")),
    "window": Scalar(str, checks.duration),
    "version": Scalar(str),
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
    return {
        name: BaselineConfig(
            kind=baseline.get("kind", "trailing"),
            window=parse_duration(baseline["window"]) if "window" in baseline else 3600,
            version=baseline.get("version"),
        )
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
