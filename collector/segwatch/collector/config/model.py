"""The collector's YAML configuration: what to collect and what "normal" is.

One file, every key optional (an empty file, or none, is valid: zero config).
:func:`parse_config` validates it in one pass and raises :class:`ConfigError`
listing *every* problem with its YAML path and line; startup refuses bad
config. The reference is ``docs/config.md``. Relative paths in a file are
relative to the file's directory (:mod:`segwatch.collector.config.files`).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from segwatch.clickhouse.detection import (
    DetectorSpec,
    check_detector_duration,
    load_manifest,
    parse_duration,
)
from segwatch.clickhouse.lifecycle import Persistence
from segwatch.clickhouse.store import DEFAULT_DSN, parse_dsn
from segwatch.clickhouse.yaml_schema import (
    Choice,
    ListOf,
    Problems,
    Record,
    Scalar,
    Table,
    validate,
)

from .endpoints import parse_endpoint
from .files import resolve_dsn, resolve_path
from .limits import RequestLimits

__all__ = [
    "API_TOKEN_ENV",
    "DEFAULT_API_ENDPOINT",
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
    "SchedulerConfig",
    "SegmentSpec",
    "SegmentsConfig",
    "SpoolConfig",
    "StorageConfig",
    "TlsConfig",
    "WebhookConfig",
    "configured_detectors",
    "expected_biases_parameter",
    "labels_parameter",
    "load_config",
    "parse_config",
]

DEFAULT_GRPC_ENDPOINT = "127.0.0.1:4317"
DEFAULT_API_ENDPOINT = "127.0.0.1:4320"
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` lists each one as ``path (line N): message``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{listing}")


# -- the configuration, as frozen dataclasses --------------------------------


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
class WebhookConfig:
    url: str
    name: str = ""


@dataclass(frozen=True)
class AlertsConfig:
    webhooks: tuple[WebhookConfig, ...] = ()
    otlp_endpoint: str | None = None


@dataclass(frozen=True)
class SpoolConfig:
    """The write-ahead spool: requests are acknowledged once in it, flushed to the store later."""

    enabled: bool = True
    path: str = ""  # default: <store dir>/segwatch-spool, or ./segwatch-spool for a server
    max_mib: int = 1024  # unflushed data it may hold before the receiver answers UNAVAILABLE
    flush_interval: float = 1.0  # seconds between flushes to the store
    # Memory against throughput: calls per flush (bigger flushes: fewer parts for
    # ClickHouse to merge, more memory per flush) and calls waiting for the store
    # before the receiver holds back its answers (back-pressure). bench/ingest.py:
    # 20,000 rather than 10,000 took ~25 % less CPU per span for ~30 MiB more RSS
    # (and fewer aggregate rows per span, so no more memory, with 10,000 segments).
    flush_calls: int = 20_000
    max_pending_calls: int = 40_000
    # A flush failing this many times while the store answers (it refuses the data, or
    # aggregating raised) is set aside as a dead letter; store outages never count.
    max_flush_attempts: int = 10


@dataclass(frozen=True)
class StorageConfig:
    dsn: str = DEFAULT_DSN
    raw_calls: bool = True
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    histogram_accuracy: float = 0.01  # relative accuracy of the stored histograms, store-wide
    # Inserts return once their parts are fsynced (see part_durability): acknowledged
    # calls survive a power loss, not only a crash of the collector.
    fsync_parts: bool = True


@dataclass(frozen=True)
class TlsConfig:
    """Server certificate and key (PEM files); with ``client_ca_file``, clients must
    present a certificate signed by it (mutual TLS)."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


RECEIVER_TOKEN_ENV = "SEGWATCH_RECEIVER_TOKEN"
"""The bearer token OTLP clients must send (``authorization: Bearer <token>``); unset: none."""
API_TOKEN_ENV = "SEGWATCH_API_TOKEN"
"""The local API's bearer token; unset: a random one per start, in the discovery file (0600).
Required to bind the API beyond loopback (remote clients cannot read that file)."""


@dataclass(frozen=True)
class ReceiverConfig:
    endpoint: str = DEFAULT_GRPC_ENDPOINT
    max_workers: int = 8
    allowed_lateness: int = 7 * 86400  # seconds; older spans are refused (partial success)
    allowed_skew: int = 3600  # seconds a span may start in the future (its clock ahead)
    limits: RequestLimits = field(default_factory=RequestLimits)
    tls: TlsConfig = field(default_factory=TlsConfig)
    # The *name* of the environment variable holding the token: secrets stay out of files.
    token_env: str = RECEIVER_TOKEN_ENV
    # Bound beyond loopback with neither TLS nor a token, the receiver refuses to start
    # unless this says, explicitly, that anyone who reaches the port may send data.
    insecure: bool = False


@dataclass(frozen=True)
class ApiConfig:
    endpoint: str = DEFAULT_API_ENDPOINT
    token_env: str = API_TOKEN_ENV
    max_upload_mib: int = 1024  # largest training set `segwatch baseline` may upload
    # What one analyst query (segwatch sql) may take; see analyst_queries.
    max_execution_time: int = 60  # seconds
    max_memory_mib: int = 4096
    max_result_rows: int = 100_000
    max_concurrent_queries: int = 4


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


@dataclass(frozen=True)
class SchedulerConfig:
    enabled: bool = True


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


# -- checks ------------------------------------------------------------------


def _at_least(minimum: float, strictly: bool = False) -> Any:
    def check(value: float) -> None:
        if value < minimum or (strictly and value == minimum):
            raise ValueError(f"must be {'greater than' if strictly else 'at least'} {minimum}")

    return check


def _between(low: float, high: float) -> Any:
    def check(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")

    return check


def _one_of(*allowed: str) -> Any:
    def check(value: str) -> None:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, not {value!r}")

    return check


def _field_name(name: str) -> None:
    if not _FIELD_NAME.match(name):
        raise ValueError(
            f"name {name!r} must be letters, digits, _, . or - (and not start with one)"
        )


def _duration(text: str) -> None:
    parse_duration(text)


def _detector_duration(text: str) -> None:
    check_detector_duration(parse_duration(text))


def _identifier(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        raise ValueError(f"{name!r} must be letters, digits and _ (and not start with a digit)")


def _readable_file(path: str) -> None:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError(f"{path!r} is not a readable file")


def _env_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
        raise ValueError(f"{name!r} is not an environment variable name")


def _url(text: str) -> None:
    if not re.match(r"^https?://[^\s/]+", text):
        raise ValueError(f"{text!r} must be an http(s):// URL")


def _increasing(values: list[float]) -> None:
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError("edges must be strictly increasing")


# -- the schema --------------------------------------------------------------

_NUMBER = Scalar((int, float))
_SEGMENTS = Choice({
    "log": Record({"base": Scalar((int, float), _at_least(1, strictly=True))}),
    "linear": Record({"width": Scalar((int, float), _at_least(0, strictly=True)),
                      "origin": _NUMBER}),
    "edges": ListOf(_NUMBER, min_len=1),
    "quantiles": Scalar(int, _between(2, 100)),
    "top": Scalar(int, _between(1, 10_000)),
})  # fmt: skip
_FIELD = Record({
    "type": Scalar(str, _one_of("number", "category", "bool", "auto")),
    "segments": _SEGMENTS,
    "segment": Scalar(bool),
})  # fmt: skip
_FIELDS = Table(_FIELD, _field_name)
_CROSS = ListOf(Scalar(str), min_len=2, max_len=2)
_SCHEMA = Record({
    "storage": Record({
        "dsn": Scalar(str, lambda v: (parse_dsn(v), None)[1]),
        "raw_calls": Scalar(bool),
        "histogram_accuracy": Scalar((int, float), _between(0.0005, 0.2)),
        "fsync_parts": Scalar(bool),
        "spool": Record({
            "enabled": Scalar(bool),
            "path": Scalar(str),
            "max_mib": Scalar(int, _at_least(16)),
            "flush_interval": Scalar((int, float), _between(0.01, 60)),
            "flush_calls": Scalar(int, _between(100, 10_000_000)),
            "max_pending_calls": Scalar(int, _between(100, 100_000_000)),
            "max_flush_attempts": Scalar(int, _between(1, 1000)),
        }),
    }),
    "receiver": Record({
        "grpc": Record({
            "endpoint": Scalar(str, lambda v: (parse_endpoint(v), None)[1]),
            "max_workers": Scalar(int, _between(1, 256)),
            # Whether the files are readable is checked once they are resolved (_build).
            "tls": Record({
                "cert_file": Scalar(str),
                "key_file": Scalar(str),
                "client_ca_file": Scalar(str),
            }),
            "token_env": Scalar(str, _env_name),
            "insecure": Scalar(bool),
        }),
        "allowed_lateness": Scalar(str, _duration),
        "allowed_skew": Scalar(str, _duration),
        "limits": Record({
            "max_message_mib": Scalar(int, _between(1, 1024)),
            "max_spans_per_request": Scalar(int, _between(1, 10_000_000)),
            "max_attributes_per_span": Scalar(int, _between(1, 100_000)),
            "max_attribute_bytes": Scalar(int, _between(64, 64 << 20)),
        }),
    }),
    "api": Record({
        "endpoint": Scalar(str, lambda v: (parse_endpoint(v), None)[1]),
        "token_env": Scalar(str, _env_name),
        "max_upload_mib": Scalar(int, _between(1, 1 << 20)),
        "max_execution_time": Scalar(str, _duration),
        "max_memory_mib": Scalar(int, _between(16, 1 << 20)),
        "max_result_rows": Scalar(int, _between(1, 100_000_000)),
        "max_concurrent_queries": Scalar(int, _between(1, 64)),
    }),
    "scheduler": Record({"enabled": Scalar(bool)}),
    "segments": Record({
        "top_k": Scalar(int, _between(1, 10_000)),
        "min_segment_size": Scalar(int, _at_least(1)),
        "max_per_model": Scalar(int, _between(10, 10_000_000)),
        "max_models": Scalar(int, _between(1, 1_000_000)),
        "max_fields_per_model": Scalar(int, _between(1, 100_000)),
        "crosses": ListOf(_CROSS),
    }),
    "models": Table(Record({
        "features": _FIELDS,
        "outputs": _FIELDS,
        "metrics": _FIELDS,
        "contexts": ListOf(Scalar(str, _field_name)),
        "crosses": ListOf(_CROSS),
        "baseline": Scalar(str),
        "labels": Table(Record({
            "kind": Scalar(str, _one_of("classification", "regression")),
            "prediction": Scalar(str, _field_name),
            "score": Scalar(str, _field_name),
            "positive": Scalar((str, int, bool)),
            "threshold": _NUMBER,
        }), _field_name),
    }), _field_name),
    "contexts": _FIELDS,
    "baselines": Table(Record({
        "kind": Scalar(str, _one_of("trailing", "same_hour_last_week", "version", "training")),
        "window": Scalar(str, _duration),
        "version": Scalar(str),
    }), _field_name),
    "expected_biases": ListOf(Record({
        "model": Scalar(str),
        "dimension": Scalar(str),
        "quantities": ListOf(Scalar(str)),
    })),
    "detectors": Table(Record({
        "enabled": Scalar(bool),
        "cadence": Scalar(str, _detector_duration),
        "window": Scalar(str, _detector_duration),
        "baseline": Scalar(str, _detector_duration),
        "delay": Scalar(str, _detector_duration),
        "persistence": Record({"found": Scalar(int, _between(1, 100)),
                               "windows": Scalar(int, _between(1, 100))}),
        "threshold": Scalar((int, float), _at_least(0)),
        "min_support": Scalar(int, _at_least(1)),
        "parameters": Table(Scalar((int, float, str)), _identifier),
    })),
    "alerts": Record({
        "webhooks": ListOf(Record({"url": Scalar(str, _url), "name": Scalar(str)})),
        "otlp": Record({"endpoint": Scalar(str, _url)}),
    }),
})  # fmt: skip


# -- loading -----------------------------------------------------------------


def load_config(path: str | None) -> CollectorConfig:
    """Read and validate a config file; ``None`` gives the defaults.

    Relative paths in the file are resolved against the file's directory.
    """
    if path is None:
        return CollectorConfig()
    if not os.path.isfile(path):
        raise ConfigError(path, ["file not found"])
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return parse_config(text, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_config(
    text: str, source: str = "<config>", base_dir: str | None = None
) -> CollectorConfig:
    """Validate YAML text; raise :class:`ConfigError` listing every problem.

    ``base_dir``: the directory relative paths in the text are relative to
    (the config file's); ``None`` leaves them relative to the current directory.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
    problems = Problems()
    data = validate(root, _SCHEMA, "", problems) if root is not None else {}
    if data is None:
        raise ConfigError(source, problems.items or ["the top level must be a mapping"])
    config = _build(data, problems, base_dir)
    _check_references(config, data, problems)
    if problems.items:
        raise ConfigError(source, problems.items)
    return config


def _build(data: dict[str, Any], problems: Problems, base_dir: str | None) -> CollectorConfig:
    receiver = dict(data.get("receiver", {}).get("grpc", {}))
    receiver["tls"] = TlsConfig(**_tls_files(receiver.get("tls", {}), problems, base_dir))
    receiver["limits"] = RequestLimits(**data.get("receiver", {}).get("limits", {}))
    for key in ("allowed_lateness", "allowed_skew"):
        if key in data.get("receiver", {}):
            receiver[key] = parse_duration(data["receiver"][key])
    tls = receiver["tls"]
    if tls.enabled != bool(tls.key_file) or (tls.client_ca_file and not tls.enabled):
        problems.at("receiver.grpc.tls", "cert_file and key_file go together, and "
                                          "client_ca_file needs them")  # fmt: skip
    segments = data.get("segments", {})
    storage = {k: v for k, v in data.get("storage", {}).items() if k != "spool"}
    # The default store too lives beside the file: every command reading it finds the same.
    storage["dsn"] = resolve_dsn(base_dir, storage.get("dsn", DEFAULT_DSN))
    spool = dict(data.get("storage", {}).get("spool", {}))
    if "path" in spool:
        spool["path"] = resolve_path(base_dir, spool["path"])
    elif base_dir is not None and storage["dsn"].startswith(("http://", "https://")):
        # A server's collector keeps its spool beside the file too, not wherever it started.
        spool["path"] = os.path.join(base_dir, "segwatch-spool")
    return CollectorConfig(
        storage=StorageConfig(**storage, spool=SpoolConfig(**spool)),
        receiver=ReceiverConfig(**receiver),
        api=_api(data.get("api", {})),
        scheduler=SchedulerConfig(**data.get("scheduler", {})),
        segments=SegmentsConfig(
            top_k=segments.get("top_k", 20),
            min_segment_size=segments.get("min_segment_size", 200),
            crosses=tuple(tuple(c) for c in segments.get("crosses", ())),
            max_per_model=segments.get("max_per_model", SegmentsConfig.max_per_model),
            max_models=segments.get("max_models", SegmentsConfig.max_models),
            max_fields_per_model=segments.get(
                "max_fields_per_model", SegmentsConfig.max_fields_per_model
            ),
        ),
        models={
            name: _model(f"models.{name}", model, problems)
            for name, model in data.get("models", {}).items()
        },
        contexts={
            name: _field(f"contexts.{name}", spec, problems)
            for name, spec in data.get("contexts", {}).items()
        },
        baselines={
            name: BaselineConfig(
                kind=spec.get("kind", "trailing"),
                window=parse_duration(spec["window"]) if "window" in spec else 3600,
                version=spec.get("version"),
            )
            for name, spec in data.get("baselines", {}).items()
        },
        expected_biases=tuple(
            ExpectedBias(b.get("model", ""), b.get("dimension", ""), tuple(b.get("quantities", ())))
            for b in data.get("expected_biases", ())
        ),
        detectors={
            name: DetectorConfig(
                enabled=spec.get("enabled", True),
                cadence=parse_duration(spec["cadence"]) if "cadence" in spec else None,
                window=parse_duration(spec["window"]) if "window" in spec else None,
                baseline=parse_duration(spec["baseline"]) if "baseline" in spec else None,
                delay=parse_duration(spec["delay"]) if "delay" in spec else None,
                persistence=_persistence(f"detectors.{name}", spec.get("persistence"), problems),
                parameters={
                    **spec.get("parameters", {}),
                    **{k: spec[k] for k in ("threshold", "min_support") if k in spec},
                },
            )
            for name, spec in data.get("detectors", {}).items()
        },
        alerts=AlertsConfig(
            webhooks=tuple(
                WebhookConfig(w["url"], w.get("name", ""))
                for w in data.get("alerts", {}).get("webhooks", ())
                if "url" in w
            ),
            otlp_endpoint=data.get("alerts", {}).get("otlp", {}).get("endpoint"),
        ),
    )


def _tls_files(files: dict[str, str], problems: Problems, base_dir: str | None) -> dict[str, str]:
    """The TLS files, resolved against the config's directory; each must be readable."""
    resolved = {}
    for key, path in files.items():
        resolved[key] = resolve_path(base_dir, path)
        try:
            _readable_file(resolved[key])
        except ValueError as exc:
            problems.at(f"receiver.grpc.tls.{key}", str(exc))
    return resolved


def _api(spec: dict[str, Any]) -> ApiConfig:
    spec = dict(spec)
    if "max_execution_time" in spec:
        spec["max_execution_time"] = parse_duration(spec["max_execution_time"])
    return ApiConfig(**spec)


def _field(path: str, spec: dict[str, Any], problems: Problems) -> FieldConfig:
    kind = spec.get("type", "auto")
    segments = SegmentSpec()
    if spec.get("segment") is False:
        segments = SegmentSpec(kind="none")
    elif "segments" in spec:
        ((how, value),) = spec["segments"].items()
        numeric_only = how in ("log", "linear", "edges", "quantiles")
        if numeric_only and kind in ("category", "bool"):
            problems.at(f"{path}.segments.{how}", f"{how} buckets need type: number, not {kind}")
        if how == "top" and kind == "number":
            problems.at(f"{path}.segments.top", "top K is for categories, not type: number")
        if how == "edges":
            try:
                _increasing(value)
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
    return FieldConfig(type=kind, segments=segments)


def _model(path: str, spec: dict[str, Any], problems: Problems) -> ModelConfig:
    return ModelConfig(
        features={n: _field(f"{path}.features.{n}", f, problems)
                  for n, f in spec.get("features", {}).items()},
        outputs={n: _field(f"{path}.outputs.{n}", f, problems)
                 for n, f in spec.get("outputs", {}).items()},
        metrics={n: _field(f"{path}.metrics.{n}", f, problems)
                 for n, f in spec.get("metrics", {}).items()},
        contexts=tuple(spec.get("contexts", ())),
        crosses=tuple(tuple(c) for c in spec.get("crosses", ())),
        baseline=spec.get("baseline"),
        labels={n: _label(f"{path}.labels.{n}", label, problems)
                for n, label in spec.get("labels", {}).items()},
    )  # fmt: skip


def _persistence(path: str, spec: Any, problems: Problems) -> tuple[int, int] | None:
    """``{found: k, windows: n}``: an anomaly opens once found in k of the last n windows."""
    if spec is None:
        return None
    found, windows = spec.get("found", 1), spec.get("windows", 1)
    if found > windows:
        problems.at(f"{path}.persistence", f"found ({found}) cannot exceed windows ({windows})")
        return None
    return found, windows


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


def _check_references(config: CollectorConfig, data: dict[str, Any], problems: Problems) -> None:
    """What the structure alone cannot tell: names that must refer to something declared."""
    for name, model in config.models.items():
        dimensions = set(model.features) | set(model.contexts)
        for context in model.contexts:
            if context not in config.contexts:
                problems.at(f"models.{name}.contexts", f"context {context!r} is not declared "
                            "under contexts")  # fmt: skip
        for i, cross in enumerate(model.crosses):
            for part in cross:
                if part not in dimensions:
                    problems.at(
                        f"models.{name}.crosses[{i}]",
                        f"{part!r} is not a feature or context of model {name!r}",
                    )
            if cross[0] == cross[1]:
                problems.at(f"models.{name}.crosses[{i}]", "a cross needs two different fields")
        if model.baseline is not None and model.baseline not in config.baselines:
            problems.at(f"models.{name}.baseline", f"no baseline named {model.baseline!r}")
        for label_name, label in model.labels.items():
            for role, output in (("prediction", label.prediction), ("score", label.score)):
                if output and model.outputs and output not in model.outputs:
                    problems.at(f"models.{name}.labels.{label_name}.{role}",
                                f"{output!r} is not an output of model {name!r}")  # fmt: skip
    declared = {f for m in config.models.values() for f in (*m.features, *m.contexts)}
    declared |= set(config.contexts)
    for i, cross in enumerate(config.segments.crosses):
        for part in cross:
            if part not in declared:
                problems.at(f"segments.crosses[{i}]", f"{part!r} is not a declared feature or "
                            "context")  # fmt: skip
    for name, baseline in config.baselines.items():
        if baseline.kind == "version" and not baseline.version:
            problems.at(f"baselines.{name}", "a version baseline must name its version")
    for i, bias in enumerate(config.expected_biases):
        where = f"expected_biases[{i}]"
        if not bias.model or not bias.dimension:
            problems.at(where, "needs model and dimension")
        elif bias.model not in config.models:
            problems.at(f"{where}.model", f"no model named {bias.model!r} under models")
        else:
            model = config.models[bias.model]
            if bias.dimension not in (*model.features, *model.contexts):
                problems.at(f"{where}.dimension", f"{bias.dimension!r} is not a feature or "
                            f"context of model {bias.model!r}")  # fmt: skip
    if config.detectors:
        known = {spec.name for spec in load_manifest()}
        for name in config.detectors:
            if name not in known:
                hint = difflib.get_close_matches(name, sorted(known), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                problems.at(f"detectors.{name}", f"no detector named {name!r}{suggestion} "
                            f"(known: {', '.join(sorted(known))})")  # fmt: skip
        for name, detector in config.detectors.items():
            fdr = detector.parameters.get("fdr")
            if fdr is not None and not (isinstance(fdr, (int, float)) and 0 < fdr < 1):
                problems.at(
                    f"detectors.{name}.parameters.fdr",
                    f"the false-discovery rate must lie between 0 and 1, not {fdr!r}",
                )


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
        if "labels" in parameters:
            parameters["labels"] = labels_parameter(config)
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
