"""The examples run as the docs say, and send what the docs' configs declare.

* ``examples/text_pipeline.py`` against a collector running the text-pipeline config of
  docs/config.md: every field that config declares arrives with values, the example
  sends no field the config does not declare, and the query its docstring shows runs.
* The README's auto-instrumentation command, as written there (its environment, no
  other OTel variables), runs ``examples/sklearn_service.py`` into a collector from a
  fresh virtual environment holding only what the README's ``pip install`` line
  brings. That set is resolved from the metadata of this environment and linked from
  it, not installed from a package index (no index is used here): whether each
  package installs from an index is not checked; what the example needs is.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from snippets import ROOT, Block, all_blocks, commands_of, pipeline_parts
from waiting import wait_until

from segwatch.collector.config import ApiConfig, CollectorConfig, SchedulerConfig, parse_config
from segwatch.collector.service.collector import Collector


def _block(path: str, lang: str, heading: str = "", contains: str = "") -> Block:
    (found,) = [
        b for b in all_blocks()
        if str(b.path) == path and b.lang == lang and heading in b.heading and contains in b.text
    ]  # fmt: skip
    return found


TEXT_PIPELINE = _block("docs/config.md", "yaml", heading="a text pipeline")
SKLEARN = _block("README.md", "bash", contains="examples/sklearn_service.py")
TEXT_PIPELINE_DOC = (
    ast.get_docstring(
        ast.parse((ROOT / "examples" / "text_pipeline.py").read_text(encoding="utf-8"))
    )
    or ""
)


def _running(config: CollectorConfig, store: Path) -> Collector:
    """``config`` on a fresh store, on ports the OS picks, no detectors scheduled."""
    collector = Collector(replace(
        config,
        storage=replace(config.storage, dsn=f"chdb://{store}"),
        receiver=replace(config.receiver, endpoint="127.0.0.1:0"),
        api=ApiConfig(endpoint="127.0.0.1:0"),
        scheduler=SchedulerConfig(enabled=False),
    ))  # fmt: skip
    collector.start()
    return collector


@pytest.fixture
def text_collector(tmp_path: Path) -> Iterator[Collector]:
    collector = _running(parse_config(TEXT_PIPELINE.text), tmp_path / "store")
    yield collector
    collector.shutdown()


def _stored(collector: Collector, query: str) -> list[tuple[object, ...]]:
    collector.flush()
    assert collector._clients is not None
    return [tuple(row) for row in collector._clients.api.query(query).result_rows]


def test_the_text_pipeline_sends_what_its_config_declares(text_collector: Collector) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{text_collector.receiver.address}"  # type: ignore[union-attr]
    sent = subprocess.run([sys.executable, str(ROOT / "examples" / "text_pipeline.py")],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: text_collector.processor.stats.model_calls >= 1500)  # type: ignore[union-attr]
    config = text_collector.config
    quantities = _stored(text_collector, (
        "SELECT model_name, quantity, sum(count), sum(missing) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' GROUP BY ALL"
    ))  # fmt: skip
    dimensions = _stored(text_collector, (
        "SELECT model_name, segment_dim, groupUniqArray(segment_value) FROM ml_segment_aggregates "
        "WHERE segment_dim != '__all__' GROUP BY ALL"
    ))  # fmt: skip
    assert {row[0] for row in quantities} == set(config.models)
    for name, model in config.models.items():
        declared = {f"feature.{n}" for n in model.features} | {f"output.{n}" for n in model.outputs}
        declared |= {f"metric.{n}" for n in model.metrics}
        stored = {q: (calls, missing) for m, q, calls, missing in quantities if m == name}
        assert set(stored) == declared, name  # nothing undeclared arrives
        assert all(v == (500, 0) for v in stored.values()), (name, stored)  # all sent, always
        segmented = {f"feature.{n}" for n in model.features} | {
            f"context.{c}" for c in model.contexts
        }
        crossed = {f"context.{a}×context.{b}" for a, b in model.crosses}
        values = {d: set(v) for m, d, v in dimensions if m == name}  # type: ignore[call-overload]
        assert set(values) == segmented | crossed, name
        for dimension in segmented:  # a context the example forgot would be MISSING only
            assert values[dimension] - {"MISSING"}, (name, dimension)
    # The query the example's docstring shows finds its Spanish traffic less confident.
    (query,) = re.findall(r'segwatch sql "(.*?)"', TEXT_PIPELINE_DOC, flags=re.DOTALL)
    confidence = dict(_stored(text_collector, query))  # type: ignore[arg-type]
    assert set(confidence) == {"en", "es"} and confidence["es"] < confidence["en"]


def _readme_command() -> tuple[list[str], dict[str, str], list[str]]:
    """The README block's ``pip install`` requirements, then its environment assignments
    and command."""
    (install, run) = commands_of(SKLEARN)
    (pip,) = pipeline_parts(install.line)
    assert pip[:2] == ["pip", "install"]
    (words,) = pipeline_parts(run.line)
    assignments = [w for w in words if re.fullmatch(r"[A-Z_]+=\S*", w)]
    env = dict(w.split("=", 1) for w in assignments)
    return pip[2:], env, words[len(assignments) :]


def _closure(requirements: list[str]) -> set[str]:
    """The distributions ``pip install requirements`` brings, resolved from the metadata of
    the distributions installed here (markers evaluated, extras followed)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen |= {key, name}
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            wanted = [{"extra": e} for e in ("", *requirement.extras)]
            if needed.marker is None or any(needed.marker.evaluate(w) for w in wanted):
                todo.append(needed)
    return {key for key in seen if "[" not in key}


def _venv_of(distributions: set[str], directory: Path) -> Path:
    """A fresh virtual environment holding exactly ``distributions``, linked from this one
    (what ``pip install`` would put there, without an index), with their console scripts.
    Returns its ``bin`` directory."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True,
                   timeout=120)  # fmt: skip
    (site,) = directory.glob("lib/python*/site-packages")
    for name in distributions:
        dist = metadata.distribution(name)
        root = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
            if not (site / top).exists() and (root / top).exists():
                (site / top).symlink_to(root / top)
        for script in dist.entry_points.select(group="console_scripts"):
            path = directory / "bin" / script.name
            path.write_text(f"#!{directory / 'bin' / 'python'}\nimport sys\n"
                            f"from {script.module} import {script.attr}\n"
                            f"sys.exit({script.attr}())\n")  # fmt: skip
            path.chmod(0o755)
    return directory / "bin"


def test_the_readme_command_runs_the_sklearn_example(collector: Collector, tmp_path: Path) -> None:
    """In a venv of what the README's ``pip install`` line brings, and nothing else, the
    README's command (its environment, no other OTel or Python variables) monitors the
    example: a package the line forgot is missing there, and the run fails."""
    requirements, shown, command = _readme_command()
    assert requirements[0] == "segwatch[sdk]"
    assert command == ["opentelemetry-instrument", "python", "examples/sklearn_service.py"]
    assert shown["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    brought = _closure(requirements)
    assert {"opentelemetry-distro", "opentelemetry-sdk", "scikit-learn", "numpy"} <= brought
    assert not brought & {"chdb", "grpcio-tools", "lightgbm", "pyarrow", "pytest"}
    bin_dir = _venv_of(brought, tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON", "VIRTUAL"))}
    env |= shown | {
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector.receiver.address}",  # type: ignore[union-attr]
    }
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "predicted 200 customers in 10 requests"
    wait_until(lambda: collector.processor.stats.model_calls >= 200)  # type: ignore[union-attr]
    rows = _stored(collector, "SELECT model_name, service_name, count() FROM ml_model_calls "
                              "GROUP BY ALL")  # fmt: skip
    assert rows == [("churn", "churn-service", 200)]
