"""The config language: one YAML file says what to collect and what "normal" is.

What enters: a YAML file's path (:func:`load_config`; ``None``: the defaults)
or its text (:func:`parse_config`). Each section is checked against a schema
written in :mod:`segwatch.clickhouse.yaml_schema`, in one pass.

What leaves: a :class:`CollectorConfig` of frozen dataclasses, one per
section (every key optional: an empty file is valid), or a
:class:`ConfigError` listing *every* problem with its YAML path and line
(``models.fraud.baseline (line 17): no baseline named 'lastweek'``), and
:func:`configured_detectors`: the manifest's detectors as the config tunes
them. The reference is ``docs/config.md``.

Thread contract: loading is a pure function of the file; the result is
immutable, built once at start and shared by every thread without locks.

The modules, by section: :mod:`.storage` (``storage``), :mod:`.network`
(``receiver``, ``api``; :mod:`.limits`, :mod:`.endpoints`), :mod:`.fields`
(``models``, ``contexts``, ``segments``), :mod:`.detectors` (``baselines``,
``expected_biases``, ``detectors``, ``scheduler``), :mod:`.alerts`; then
:mod:`.collector_config` (the whole file), :mod:`.load` (reading, cross-checks),
:mod:`.startup` (what a service refuses to start with: one function per rule, for
validate and for the component it guards), :mod:`.detector_specs` (the overrides
applied) and :mod:`.files` (which file a command reads, what its relative paths
mean). This package's modules import each other directly; code elsewhere imports
the module that defines a name.
"""

from .alerts import AlertsConfig, WebhookConfig
from .collector_config import CollectorConfig
from .detector_specs import configured_detectors, expected_biases_parameter, labels_parameter
from .detectors import BaselineConfig, DetectorConfig, ExpectedBias, SchedulerConfig
from .endpoints import is_loopback, is_wildcard, parse_endpoint
from .fields import FieldConfig, LabelConfig, ModelConfig, SegmentsConfig, SegmentSpec
from .files import CONFIG_ENV, DEFAULT_CONFIG_FILE, find_config
from .limits import RequestLimits
from .load import ConfigError, load_config, parse_config
from .network import (
    API_TOKEN_ENV,
    DEFAULT_API_ENDPOINT,
    DEFAULT_GRPC_ENDPOINT,
    RECEIVER_TOKEN_ENV,
    ApiConfig,
    ReceiverConfig,
    TlsConfig,
)
from .storage import SpoolConfig, StorageConfig

__all__ = [
    "API_TOKEN_ENV",
    "CONFIG_ENV",
    "DEFAULT_API_ENDPOINT",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_GRPC_ENDPOINT",
    "RECEIVER_TOKEN_ENV",
    "AlertsConfig",
    "ApiConfig",
    "BaselineConfig",
    "CollectorConfig",
    "ConfigError",
    "DetectorConfig",
    "ExpectedBias",
    "FieldConfig",
    "LabelConfig",
    "ModelConfig",
    "ReceiverConfig",
    "RequestLimits",
    "SchedulerConfig",
    "SegmentSpec",
    "SegmentsConfig",
    "SpoolConfig",
    "StorageConfig",
    "TlsConfig",
    "WebhookConfig",
    "configured_detectors",
    "expected_biases_parameter",
    "find_config",
    "is_loopback",
    "is_wildcard",
    "labels_parameter",
    "load_config",
    "parse_config",
    "parse_endpoint",
]
