"""The ``serve`` section: the ClickHouse HTTP door over the embedded store (``segwatch serve``).

With no ``users`` it is a fresh ClickHouse server on loopback: the user
``default``, no password, full rights. With users, each is either a reader
(``readonly: true``: the engine refuses every write, for analysts and BI) or a
writer (for collectors), its password in the environment variable
``password_env`` names, and a budget per query. Binding beyond loopback needs
both TLS and users: the door hands out the whole store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segwatch.clickhouse.detection import parse_duration
from segwatch.clickhouse.yaml_schema import MapOf, Problems, Record, Scalar, between

from . import checks
from .endpoints import is_loopback, parse_endpoint
from .network import TLS_SCHEMA, TlsConfig, build_tls

__all__ = ["DEFAULT_SERVE_ENDPOINT", "SERVE_SCHEMA", "ServeConfig", "ServeUser", "build_serve"]

DEFAULT_SERVE_ENDPOINT = "127.0.0.1:8123"


@dataclass(frozen=True)
class ServeUser:
    """One user of the door: its password's variable, its rights and its budget per query."""

    name: str
    password_env: str = ""  # "" only for the built-in `default` user, when no users are set
    readonly: bool = False
    max_execution_time: int = 0  # seconds; 0: no limit (readers default to 60)
    max_memory_mib: int = 0  # 0: no limit beyond the engine's own (readers default to 4096)
    max_concurrent_queries: int = 8


DEFAULT_USER = ServeUser("default")
"""The user a fresh ClickHouse server has: no password, full rights (loopback only)."""


@dataclass(frozen=True)
class ServeConfig:
    endpoint: str = DEFAULT_SERVE_ENDPOINT
    tls: TlsConfig = field(default_factory=TlsConfig)
    users: tuple[ServeUser, ...] = ()
    # `segwatch collector` opens the door too, on its own embedded store.
    in_collector: bool = False

    @property
    def effective_users(self) -> tuple[ServeUser, ...]:
        return self.users or (DEFAULT_USER,)


_USER = Record({
    "password_env": Scalar(str, checks.env_name),
    "readonly": Scalar(bool),
    "max_execution_time": Scalar(str, checks.duration),
    "max_memory_mib": Scalar(int, between(16, 1 << 20)),
    "max_concurrent_queries": Scalar(int, between(1, 256)),
})  # fmt: skip

SERVE_SCHEMA = Record({
    "http": Record({
        "endpoint": Scalar(str, checks.endpoint),
        "tls": TLS_SCHEMA,
    }),
    "users": MapOf(_USER, checks.identifier),
    "in_collector": Scalar(bool),
})  # fmt: skip


def build_serve(spec: dict[str, Any], problems: Problems, base_dir: str | None) -> ServeConfig:
    """The validated section; refuses a bind beyond loopback without TLS and users."""
    http = spec.get("http", {})
    tls = build_tls(http.get("tls", {}), "serve.http.tls", problems, base_dir)
    users = tuple(_user(name, user, problems) for name, user in spec.get("users", {}).items())
    config = ServeConfig(
        endpoint=http.get("endpoint", DEFAULT_SERVE_ENDPOINT),
        tls=tls,
        users=users,
        in_collector=spec.get("in_collector", False),
    )
    host, _ = parse_endpoint(config.endpoint)
    if not is_loopback(host) and not (tls.enabled and users):
        problems.at(
            "serve.http.endpoint",
            f"{config.endpoint} is reachable from other machines: the door serves the whole "
            "store, so beyond loopback it needs serve.http.tls and serve.users (with passwords)",
        )
    return config


def _user(name: str, spec: dict[str, Any], problems: Problems) -> ServeUser:
    path = f"serve.users.{name}"
    if "password_env" not in spec:
        problems.at(path, "a user needs password_env: the variable holding its password")
    readonly = spec.get("readonly", False)
    seconds = spec.get("max_execution_time")
    return ServeUser(
        name=name,
        password_env=spec.get("password_env", ""),
        readonly=readonly,
        max_execution_time=parse_duration(seconds) if seconds else (60 if readonly else 0),
        max_memory_mib=spec.get("max_memory_mib", 4096 if readonly else 0),
        max_concurrent_queries=spec.get("max_concurrent_queries", 8),
    )
