"""Reading a config file: validate it in one pass, build it, check what it refers to.

Every key is optional (an empty file, or none, is valid: zero config).
:func:`parse_config` raises :class:`ConfigError` listing *every* problem with
its YAML path and line; startup refuses bad config. The reference is
``docs/config.md``. Relative paths in a file are relative to the file's
directory (:mod:`.files`). Text YAML cannot parse is one problem naming its line
and column (PyYAML's own message names the text ``<unicode string>``).

:func:`check_startup` is what ``segwatch collector`` and ``segwatch serve`` would
otherwise find only while starting (a port bound beyond loopback without its
token, a user's password variable unset, two listeners on one port, a store
path that is a file): those commands run it before they start anything, and
``segwatch validate`` runs it too, so a config the services refuse fails
validation (exit 2, with the YAML path and line). It reads the environment the
command runs in (the tokens and passwords the file names by variable) and the
file system, changing neither: validate a config where it will run.
"""

from __future__ import annotations

import difflib
import itertools
import os
from collections.abc import Mapping
from typing import Any

import yaml

from segwatch.clickhouse.detection import load_manifest
from segwatch.clickhouse.store import parse_dsn
from segwatch.clickhouse.yaml_schema import Problems, listing, read

from .alerts import build_alerts
from .collector_config import COLLECTOR_CONFIG_SCHEMA, CollectorConfig
from .detectors import SchedulerConfig, build_baselines, build_detectors, build_expected_biases
from .endpoints import is_loopback, is_wildcard, parse_endpoint
from .fields import build_field, build_model, build_segments, global_cross_problem
from .network import build_api, build_receiver
from .serve import build_serve
from .storage import build_storage, check_storage

__all__ = ["STARTS", "ConfigError", "check_startup", "load_config", "parse_config"]


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` lists each one as ``path (line N): message``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        # One problem, one line (``segwatch: FILE: PROBLEM``); several, a listing.
        super().__init__(f"{source}: {problems[0]}" if len(problems) == 1
                         else listing(source, problems))  # fmt: skip


def load_config(
    path: str | None, start: str | None = None, environ: Mapping[str, str] | None = None
) -> CollectorConfig:
    """Read and validate a config file; ``None`` gives the defaults.

    Relative paths in the file are resolved against the file's directory.
    ``start``: also what ``segwatch <start>`` checks before starting
    (:func:`check_startup`), in ``environ`` (default ``os.environ``).
    """
    if path is None:
        return CollectorConfig()
    if not os.path.isfile(path):
        raise ConfigError(path, ["file not found"])
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text (byte {exc.start})"]) from None
    base_dir = os.path.dirname(os.path.abspath(path))
    return parse_config(text, source=path, base_dir=base_dir, start=start, environ=environ)


def parse_config(
    text: str,
    source: str = "<config>",
    base_dir: str | None = None,
    start: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> CollectorConfig:
    """Validate YAML text; raise :class:`ConfigError` listing every problem.

    ``base_dir``: the directory relative paths in the text are relative to
    (the config file's); ``None`` leaves them relative to the current directory.
    ``start`` (``collector``, ``serve`` or ``validate``): also the checks that
    service makes before it starts, against ``environ`` (default ``os.environ``).
    """
    syntax = _yaml_syntax_problem(text)
    if syntax is not None:
        raise ConfigError(source, [syntax])
    problems = Problems()
    data = read(text, COLLECTOR_CONFIG_SCHEMA, problems)
    if data is None:
        raise ConfigError(source, problems.items or ["the top level must be a mapping"])
    config = _build(data, problems, base_dir)
    _check_references(config, problems)
    if start is not None and not problems.items:  # on a config that is whole
        check_startup(config, problems, start, os.environ if environ is None else environ)
    if problems.items:
        raise ConfigError(source, problems.items)
    return config


def _yaml_syntax_problem(text: str) -> str | None:
    """``line L, column C: not valid YAML: ...`` for text YAML cannot parse, else None.

    PyYAML's own message names the text ``<unicode string>`` and spans several
    lines; this names the line (the file is the error's source) on one.
    """
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = exc.context or ""
        if context and exc.context_mark is not None and exc.context_mark is not mark:
            context += f" at line {exc.context_mark.line + 1}"
        return f"{where}not valid YAML: {exc.problem}" + (f" ({context})" if context else "")
    except yaml.YAMLError as exc:  # no position to give (e.g. a reader error)
        return f"not valid YAML: {' '.join(str(exc).split())}"
    return None


def _build(data: dict[str, Any], problems: Problems, base_dir: str | None) -> CollectorConfig:
    """The validated data as a :class:`CollectorConfig`; what needs more than one value's
    check (paired keys, files, edges in order) goes to ``problems``."""
    return CollectorConfig(
        receiver=build_receiver(data.get("receiver", {}), problems, base_dir),
        storage=build_storage(data.get("storage", {}), base_dir),
        api=build_api(data.get("api", {})),
        scheduler=SchedulerConfig(**data.get("scheduler", {})),
        segments=build_segments(data.get("segments", {})),
        models={
            name: build_model(f"models.{name}", model, problems)
            for name, model in data.get("models", {}).items()
        },
        contexts={
            name: build_field(f"contexts.{name}", spec, problems)
            for name, spec in data.get("contexts", {}).items()
        },
        baselines=build_baselines(data.get("baselines", {})),
        expected_biases=build_expected_biases(data.get("expected_biases", ())),
        detectors=build_detectors(data.get("detectors", {}), problems),
        alerts=build_alerts(data.get("alerts", {})),
        serve=build_serve(data.get("serve", {}), problems, base_dir),
    )


# -- what the structure alone cannot tell: names that must refer to something declared


def _check_references(config: CollectorConfig, problems: Problems) -> None:
    check_storage(config.storage, problems)
    _check_models(config, problems)
    _check_crosses(config, problems)
    for name, baseline in config.baselines.items():
        if baseline.kind == "version" and not baseline.version:
            problems.at(f"baselines.{name}", "a version baseline must name its version")
    _check_expected_biases(config, problems)
    if config.detectors:
        _check_detectors(config, problems)


def _check_models(config: CollectorConfig, problems: Problems) -> None:
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


def _check_crosses(config: CollectorConfig, problems: Problems) -> None:
    """Each of ``segments.crosses`` applies in some declared model: one that declares both of
    its fields. A global cross is skipped in models lacking one; in none, it is a mistake."""
    for i, cross in enumerate(config.segments.crosses):
        problem = global_cross_problem(cross, config.models, config.contexts)
        if problem is not None:
            problems.at(f"segments.crosses[{i}]", problem)


def _check_expected_biases(config: CollectorConfig, problems: Problems) -> None:
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


def _check_detectors(config: CollectorConfig, problems: Problems) -> None:
    """The overridden detectors exist in the manifest; a false-discovery rate is a probability."""
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


# -- what a service checks before it starts ---------------------------------------

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
        _exposed_receiver(config, problems, environ)
        _exposed_api(config, problems, environ)
        _shared_ports(config, problems)
    if door or (start == "validate" and config.serve.users):
        _unset_passwords(config, problems, environ)
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


def _exposed_receiver(
    config: CollectorConfig, problems: Problems, environ: Mapping[str, str]
) -> None:
    receiver = config.receiver
    host, _ = parse_endpoint(receiver.endpoint)
    if is_loopback(host) or receiver.tls.enabled or receiver.insecure:
        return
    if not environ.get(receiver.token_env):
        problems.at(
            "receiver.grpc.endpoint",
            f"{receiver.endpoint} would take data from other "
            "machines with neither TLS nor a token: set receiver.grpc.tls, or a token "
            f"in {receiver.token_env} (receiver.grpc.token_env), or "
            "receiver.grpc.insecure: true; or bind it to 127.0.0.1",
        )


def _exposed_api(config: CollectorConfig, problems: Problems, environ: Mapping[str, str]) -> None:
    host, _ = parse_endpoint(config.api.endpoint)
    if not is_loopback(host) and not environ.get(config.api.token_env):
        problems.at(
            "api.endpoint",
            f"{config.api.endpoint} would be reachable from other "
            f"machines with a token they cannot know: set {config.api.token_env} "
            "(api.token_env) where the collector runs, or bind it to 127.0.0.1",
        )


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


def _unset_passwords(
    config: CollectorConfig, problems: Problems, environ: Mapping[str, str]
) -> None:
    for user in config.serve.users:
        if user.password_env and not environ.get(user.password_env):
            problems.at(
                f"serve.users.{user.name}.password_env",
                f"names {user.password_env}, "
                "which is not set (or empty) here: set it to the user's password",
            )


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
