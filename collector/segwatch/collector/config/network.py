"""The ``receiver`` and ``api`` sections: the collector's two listening ports.

The receiver takes OTLP/gRPC from services (TLS, a bearer token, request
limits, how late or early a span may be); the local API serves the CLI,
probes and metrics, with a budget for analysts' queries. Secrets never come
from the file: it names the environment variables holding them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segwatch.clickhouse.detection import parse_duration
from segwatch.clickhouse.yaml_schema import Problems, Record, Scalar, between

from . import checks
from .files import resolve_path
from .limits import RequestLimits

__all__ = [
    "API_SCHEMA",
    "API_TOKEN_ENV",
    "DEFAULT_API_ENDPOINT",
    "DEFAULT_GRPC_ENDPOINT",
    "RECEIVER_SCHEMA",
    "RECEIVER_TOKEN_ENV",
    "TLS_SCHEMA",
    "ApiConfig",
    "ReceiverConfig",
    "TlsConfig",
    "build_api",
    "build_receiver",
    "build_tls",
]

DEFAULT_GRPC_ENDPOINT = "127.0.0.1:4317"
DEFAULT_API_ENDPOINT = "127.0.0.1:4320"

RECEIVER_TOKEN_ENV = "SEGWATCH_RECEIVER_TOKEN"
"""The bearer token OTLP clients must send (``authorization: Bearer <token>``); unset: none."""
API_TOKEN_ENV = "SEGWATCH_API_TOKEN"
"""The local API's bearer token; unset: a random one per start, in the discovery file (0600).
Required to bind the API beyond loopback (remote clients cannot read that file)."""


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


TLS_SCHEMA = Record({
    "cert_file": Scalar(str),
    "key_file": Scalar(str),
    "client_ca_file": Scalar(str),
})  # fmt: skip
"""A server's TLS files (PEM); whether they are readable is checked once they are resolved."""


RECEIVER_SCHEMA = Record({
    "grpc": Record({
        "endpoint": Scalar(str, checks.endpoint),
        "max_workers": Scalar(int, between(1, 256)),
        "tls": TLS_SCHEMA,
        "token_env": Scalar(str, checks.env_name),
        "insecure": Scalar(bool),
    }),
    "allowed_lateness": Scalar(str, checks.duration),
    "allowed_skew": Scalar(str, checks.duration),
    "limits": Record({
        "max_message_mib": Scalar(int, between(1, 1024)),
        "max_spans_per_request": Scalar(int, between(1, 10_000_000)),
        "max_attributes_per_span": Scalar(int, between(1, 100_000)),
        "max_attribute_bytes": Scalar(int, between(64, 64 << 20)),
    }),
})  # fmt: skip

API_SCHEMA = Record({
    "endpoint": Scalar(str, checks.endpoint),
    "token_env": Scalar(str, checks.env_name),
    "max_upload_mib": Scalar(int, between(1, 1 << 20)),
    "max_execution_time": Scalar(str, checks.duration),
    "max_memory_mib": Scalar(int, between(16, 1 << 20)),
    "max_result_rows": Scalar(int, between(1, 100_000_000)),
    "max_concurrent_queries": Scalar(int, between(1, 64)),
})  # fmt: skip


def build_receiver(
    spec: dict[str, Any], problems: Problems, base_dir: str | None
) -> ReceiverConfig:
    """The validated section; the TLS files resolved against ``base_dir`` and checked."""
    receiver = dict(spec.get("grpc", {}))
    receiver["tls"] = build_tls(receiver.get("tls", {}), "receiver.grpc.tls", problems, base_dir)
    receiver["limits"] = RequestLimits(**spec.get("limits", {}))
    for key in ("allowed_lateness", "allowed_skew"):
        if key in spec:
            receiver[key] = parse_duration(spec[key])
    return ReceiverConfig(**receiver)


def build_tls(
    files: dict[str, str], path: str, problems: Problems, base_dir: str | None
) -> TlsConfig:
    """The TLS files at YAML ``path``, resolved against the config's directory and checked:
    each readable, cert and key together, a client CA only with them."""
    resolved = {}
    for key, name in files.items():
        resolved[key] = resolve_path(base_dir, name)
        try:
            checks.readable_file(resolved[key])
        except ValueError as exc:
            problems.at(f"{path}.{key}", str(exc))
    tls = TlsConfig(**resolved)
    if tls.enabled != bool(tls.key_file) or (tls.client_ca_file and not tls.enabled):
        problems.at(path, "cert_file and key_file go together, and client_ca_file needs them")
    return tls


def build_api(spec: dict[str, Any]) -> ApiConfig:
    spec = dict(spec)
    if "max_execution_time" in spec:
        spec["max_execution_time"] = parse_duration(spec["max_execution_time"])
    return ApiConfig(**spec)
