"""What a service refuses to start with, one rule per function, for validate and the service.

Each rule is one function returning a :class:`StartupRefusal` (the YAML key at fault and
why) or ``None``. :func:`check_startup` calls them on a whole config for ``segwatch
validate`` and before ``segwatch collector`` or ``segwatch serve`` starts anything (each
refusal a problem with its key's line); the component the rule guards calls the same
function as it starts (the receiver, the API, the door's accounts) and raises
``ValueError(str(refusal))``, so the two can never say different things.

They read the environment the command runs in (the tokens and passwords a config names
by variable) and the file system, changing neither: validate a config where it will run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from segwatch.clickhouse.store import parse_dsn
from segwatch.clickhouse.yaml_schema import Problems

from .collector_config import CollectorConfig
from .endpoints import is_loopback, is_wildcard, parse_endpoint
from .network import API_TOKEN_ENV, RECEIVER_TOKEN_ENV
from .serve import ServeUser

__all__ = [
    "STARTS",
    "StartupRefusal",
    "check_startup",
    "unprotected_api",
    "unprotected_receiver",
    "unset_password",
]


@dataclass(frozen=True)
class StartupRefusal:
    """Why a service will not start: ``key`` (a YAML path) and ``message`` (what to do)."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def _token_variable(token_env: str | None, default: str, key: str) -> str:
    """The variable a token goes in: the config's (``token_env``), or, for a component not
    told which, the default and where the config names another."""
    if token_env is None:
        return f"{default} (or the variable {key} names)"
    return f"{token_env} ({key})"


def unprotected_receiver(
    endpoint: str, *, tls: bool, token: bool, insecure: bool, token_env: str | None = None
) -> StartupRefusal | None:
    """The OTLP receiver bound beyond loopback with neither TLS nor a token, unless the
    config says ``insecure: true``: anyone reaching the port could send data."""
    host, _ = parse_endpoint(endpoint)
    if is_loopback(host) or tls or token or insecure:
        return None
    variable = _token_variable(token_env, RECEIVER_TOKEN_ENV, "receiver.grpc.token_env")
    return StartupRefusal(
        "receiver.grpc.endpoint",
        f"{endpoint} would take data from other machines with neither TLS nor a token: set "
        f"receiver.grpc.tls, or a token in {variable}, or receiver.grpc.insecure: true to "
        "accept anyone who reaches the port; or bind it to 127.0.0.1",
    )


def unprotected_api(
    endpoint: str, *, token: bool, token_env: str | None = None
) -> StartupRefusal | None:
    """The local API bound beyond loopback without a token set: the one it would make is
    written to the discovery file, which other machines cannot read."""
    host, _ = parse_endpoint(endpoint)
    if is_loopback(host) or token:
        return None
    variable = _token_variable(token_env, API_TOKEN_ENV, "api.token_env")
    return StartupRefusal(
        "api.endpoint",
        f"{endpoint} would be reachable from other machines with a token they cannot know: "
        f"set {variable} where the collector runs, or bind it to 127.0.0.1",
    )


def unset_password(user: ServeUser, environ: Mapping[str, str]) -> StartupRefusal | None:
    """A door user whose password variable is unset or empty: anyone could be that user."""
    if not user.password_env or environ.get(user.password_env):
        return None
    return StartupRefusal(
        f"serve.users.{user.name}.password_env",
        f"names {user.password_env}, which is not set (or empty) here: set it to the "
        "user's password",
    )


STARTS = ("collector", "serve", "validate")
"""Who asks :func:`check_startup`: a service about to start, or ``validate`` (either)."""


def check_startup(
    config: CollectorConfig, problems: Problems, start: str, environ: Mapping[str, str]
) -> None:
    """Add to ``problems`` what ``segwatch <start>`` would refuse while starting.

    ``validate`` checks what either service would, except what only ``segwatch
    serve`` needs (an embedded store: a collector may write to a server).
    """
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}, not {start!r}")
    collector = start in ("collector", "validate")
    door = start == "serve" or (collector and config.serve.in_collector)
    embedded = parse_dsn(config.storage.dsn).embedded
    if collector:
        receiver, api = config.receiver, config.api
        _add(problems, unprotected_receiver(
            receiver.endpoint, tls=receiver.tls.enabled, insecure=receiver.insecure,
            token=bool(environ.get(receiver.token_env)), token_env=receiver.token_env,
        ))  # fmt: skip
        _add(problems, unprotected_api(
            api.endpoint, token=bool(environ.get(api.token_env)), token_env=api.token_env
        ))  # fmt: skip
        _shared_ports(config, problems)
    if door or (start == "validate" and config.serve.users):
        for user in config.serve.users:
            _add(problems, unset_password(user, environ))
    if start == "serve" and not embedded:
        problems.at(
            "storage.dsn",
            "segwatch serve opens an embedded store (chdb://DIR), not "
            f"{config.storage.dsn}: a ClickHouse server speaks its interface itself",
        )
    elif door and not embedded:
        problems.at(
            "serve.in_collector",
            "serves the collector's embedded store; with a "
            "ClickHouse server in storage.dsn, the server speaks that interface itself",
        )
    _directories(config, problems)


def _add(problems: Problems, refusal: StartupRefusal | None) -> None:
    if refusal is not None:
        problems.at(refusal.key, refusal.message)


def _shared_ports(config: CollectorConfig, problems: Problems) -> None:
    """Two of the collector's listeners on one port (port 0: the system picks, never shared)."""
    listeners = [
        ("receiver.grpc.endpoint", config.receiver.endpoint),
        ("api.endpoint", config.api.endpoint),
    ]
    if config.serve.in_collector:
        listeners.append(("serve.http.endpoint", config.serve.endpoint))
    for (first, a), (second, b) in itertools.combinations(listeners, 2):
        (host_a, port_a), (host_b, port_b) = parse_endpoint(a), parse_endpoint(b)
        if (
            port_a
            and port_a == port_b
            and (host_a == host_b or is_wildcard(host_a) or is_wildcard(host_b))
        ):
            problems.at(second, f"{b} is the port of {first} ({a}) too: give each its own")


def _directories(config: CollectorConfig, problems: Problems) -> None:
    """The store's and the spool's directories: a file where one must be, or one this user
    cannot write, is refused at start (a directory yet to be made is made then)."""
    location = parse_dsn(config.storage.dsn)
    spool = config.storage.spool
    places = [("storage.dsn", location.path)] if location.path else []
    if spool.enabled and not location.in_memory:
        default = os.path.join(location.path or ".", "segwatch-spool")
        places.append(
            ("storage.spool.path" if spool.path else "storage.dsn", spool.path or default)
        )
    for key, path in places:
        if os.path.exists(path) and not os.path.isdir(path):
            problems.at(key, f"{path} is not a directory")
        elif os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
            problems.at(key, f"{path} is not writable by this user")
