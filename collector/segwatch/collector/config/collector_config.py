"""CollectorConfig, the whole file: one field per section, and the file's schema.

Each section's dataclasses, schema and building live in their own module
(:mod:`.storage`, :mod:`.network`, :mod:`.fields`, :mod:`.detectors`,
:mod:`.alerts`, :mod:`.serve`); :mod:`.load` reads a file into a :class:`CollectorConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from segwatch.clickhouse.yaml_schema import Record

from .alerts import ALERTS_SCHEMA, AlertsConfig
from .detectors import (
    BASELINES_SCHEMA,
    DETECTORS_SCHEMA,
    EXPECTED_BIASES_SCHEMA,
    SCHEDULER_SCHEMA,
    BaselineConfig,
    DetectorConfig,
    ExpectedBias,
    SchedulerConfig,
)
from .fields import (
    MODELS_SCHEMA,
    NAMED_FIELDS_SCHEMA,
    SEGMENTS_SCHEMA,
    FieldConfig,
    ModelConfig,
    SegmentsConfig,
)
from .network import API_SCHEMA, RECEIVER_SCHEMA, ApiConfig, ReceiverConfig
from .serve import SERVE_SCHEMA, ServeConfig
from .storage import STORAGE_SCHEMA, StorageConfig

__all__ = ["COLLECTOR_CONFIG_SCHEMA", "CollectorConfig"]


@dataclass(frozen=True)
class CollectorConfig:
    storage: StorageConfig = field(default_factory=StorageConfig)
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    contexts: dict[str, FieldConfig] = field(default_factory=dict)
    baselines: dict[str, BaselineConfig] = field(default_factory=dict)
    expected_biases: tuple[ExpectedBias, ...] = ()
    detectors: dict[str, DetectorConfig] = field(default_factory=dict)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


COLLECTOR_CONFIG_SCHEMA = Record({
    "storage": STORAGE_SCHEMA,
    "receiver": RECEIVER_SCHEMA,
    "api": API_SCHEMA,
    "scheduler": SCHEDULER_SCHEMA,
    "segments": SEGMENTS_SCHEMA,
    "models": MODELS_SCHEMA,
    "contexts": NAMED_FIELDS_SCHEMA,
    "baselines": BASELINES_SCHEMA,
    "expected_biases": EXPECTED_BIASES_SCHEMA,
    "detectors": DETECTORS_SCHEMA,
    "alerts": ALERTS_SCHEMA,
    "serve": SERVE_SCHEMA,
})  # fmt: skip
"""A config file: every key optional (an empty file is the defaults)."""
