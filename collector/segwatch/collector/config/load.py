"""Reading a config file: validate it in one pass, build it, check what it refers to.

Every key is optional (an empty file, or none, is valid: zero config).
:func:`parse_config` raises :class:`ConfigError` listing *every* problem with
its YAML path and line; startup refuses bad config. The reference is
``docs/config.md``. Relative paths in a file are relative to the file's
directory (:mod:`.files`). Text YAML cannot parse is one problem naming its line
and column (PyYAML's own message names the text ``<unicode string>``).

With ``start``, :func:`parse_config` adds what ``segwatch collector`` and ``segwatch
serve`` would otherwise find only while starting (:func:`.startup.check_startup`: a
port bound beyond loopback without its token, a user's password variable unset, two
listeners on one port, a store path that is a file): those commands load their config
so before they start anything, and ``segwatch validate`` does too, so a config the
services refuse fails validation (exit 2, with the YAML path and line).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

import yaml

from segwatch.clickhouse.detection import load_manifest
from segwatch.clickhouse.yaml_schema import Problems, listing, read

from .alerts import build_alerts
from .collector_config import COLLECTOR_CONFIG_SCHEMA, CollectorConfig
from .detectors import SchedulerConfig, build_baselines, build_detectors, build_expected_biases
from .fields import build_field, build_model, build_segments, global_cross_problem
from .network import build_api, build_receiver
from .serve import build_serve
from .startup import check_startup
from .storage import build_storage, check_storage

__all__ = ["ConfigError", "load_config", "parse_config"]


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
    (:func:`.startup.check_startup`), in ``environ`` (default ``os.environ``).
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
            known = ", ".join(sorted(config.baselines)) or "none is declared"
            problems.at(f"models.{name}.baseline", f"no baseline named {model.baseline!r} "
                        f"under baselines ({known})")  # fmt: skip
        for label_name, label in model.labels.items():
            for role, output in (("prediction", label.prediction), ("score", label.score)):
                if output and model.outputs and output not in model.outputs:
                    problems.at(f"models.{name}.labels.{label_name}.{role}",
                                f"{output!r} is not an output of model {name!r}")  # fmt: skip


def _check_crosses(config: CollectorConfig, problems: Problems) -> None:
    """Each of ``segments.crosses`` names two different fields, each declared somewhere
    when models are (:func:`~.fields.global_cross_problem`: the rule, and why no more)."""
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
