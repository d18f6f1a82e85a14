"""The built wheel in a fresh virtual environment, resolved and installed by a real pip.

The base install is what a monitored service needs: the OpenTelemetry API, its
instrumentor base and wrapt, none of grpcio, protobuf, numpy or a ClickHouse
client (as ``Requires-Dist`` says, but a resolver is what a user runs:
transitive dependencies count too). ``[collector]`` brings those. Installed,
with an SDK set up as a service does, the decorator records its spans.

One virtual environment serves every test of the module; pip resolves from the
package indexes configured on this machine (the same ones ``.ci/run`` installs
the dev environment from).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = {"grpcio", "protobuf", "numpy", "chdb", "clickhouse-connect"}
"""What a service must not get from ``pip install segwatch``."""


class FreshVenv:
    def __init__(self, path: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
        self.path = path
        self.python = path / "bin" / "python"

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``args`` with the venv's python, from the venv's folder (not the checkout), with
        no PYTHONPATH and no SEGWATCH_* variables from the test run."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SEGWATCH"))}
        return subprocess.run(
            [str(self.python), *args], cwd=self.path, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def install(self, requirement: str, *, dry_run: bool = False) -> set[str]:
        """The distributions ``pip install requirement`` installs (or would, ``dry_run``)."""
        report = self.path / "report.json"
        result = self.run(
            "-m", "pip", "install", "--quiet", *(["--dry-run"] if dry_run else []),
            "--report", str(report), requirement,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        installs = json.loads(report.read_text())["install"]
        return {item["metadata"]["name"].lower().replace("_", "-") for item in installs}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    return FreshVenv(tmp_path_factory.mktemp("venv") / "env")


def test_the_base_install_brings_no_grpc_protobuf_numpy_or_clickhouse(
    venv: FreshVenv, wheel: Path
) -> None:
    names = venv.install(str(wheel), dry_run=True)
    assert {"segwatch", "opentelemetry-api", "opentelemetry-instrumentation", "wrapt"} <= names
    assert not names & HEAVY, sorted(names & HEAVY)
    # Nor the SDK or an exporter: a service that configures its own keeps its own.
    assert not {n for n in names if n.startswith(("opentelemetry-sdk", "opentelemetry-exporter"))}


def test_the_collector_extra_brings_them(venv: FreshVenv, wheel: Path) -> None:
    names = venv.install(f"{wheel}[collector]", dry_run=True)
    assert HEAVY | {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc"} <= names


IMPORTS_WITHOUT_AN_SDK = """
import importlib
from segwatch.instrumentation import monitor
from segwatch.instrumentation.sklearn_instrumentor import SklearnInstrumentor

@monitor(model="fraud")
def predict(features):
    return 0.5

assert predict({"amount": 1.0}) == 0.5  # no SDK: the API's no-op tracer
for name in ("opentelemetry.sdk", "grpc", "google.protobuf", "numpy"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    raise AssertionError(name + " is installed")
print("ok")
"""

SPANS_WITH_AN_SDK = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from segwatch.instrumentation import monitor

@monitor(model="fraud", version="2.3")
def predict(features):
    return 0.42

predict({"amount": 120.0, "country": "BR"})
(span,) = exporter.get_finished_spans()
attributes = dict(span.attributes)
assert attributes["ml.model.name"] == "fraud", attributes
assert attributes["ml.model.version"] == "2.3", attributes
assert attributes["ml.feature.amount"] == 120.0, attributes
assert attributes["ml.feature.country"] == "BR", attributes
assert attributes["ml.output.prediction"] == 0.42, attributes
print("ok")
"""


def test_installed_the_decorator_records_spans_once_an_sdk_is_set_up(
    venv: FreshVenv, wheel: Path
) -> None:
    """Installed alone it runs without an SDK; ``segwatch[sdk]`` (the README's one line for a
    service that has none) adds the SDK and the OTLP/gRPC exporter, still no numpy."""
    venv.install(str(wheel))
    without = venv.run("-c", IMPORTS_WITHOUT_AN_SDK)
    assert (without.returncode, without.stdout.strip()) == (0, "ok"), without.stderr
    # The base install has the segwatch command but not the collector: it says so in one line.
    command = str(venv.path / "bin" / "segwatch")
    shown = venv.run("-c", f"import subprocess; subprocess.run([{command!r}, '--version'])")
    assert shown.stdout.startswith("segwatch "), (shown.stdout, shown.stderr)
    for asked in (["--help"], ["demo", "--help"]):
        helped = venv.run(
            "-c",
            f"import subprocess, sys; sys.exit(subprocess.run({[command, *asked]!r}).returncode)",
        )
        assert helped.returncode == 0, (asked, helped.stderr)
        assert helped.stdout.startswith("usage: segwatch"), (helped.stdout, helped.stderr)
        assert "pip install 'segwatch[collector]'" in helped.stdout
    refused = venv.run(
        "-c", f"import subprocess, sys; sys.exit(subprocess.run([{command!r}, 'demo']).returncode)"
    )
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.strip().endswith("(pip install 'segwatch[collector]')"), refused.stderr
    assert "Traceback" not in refused.stderr
    added = venv.install(f"{wheel}[sdk]")
    assert {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc"} <= added
    assert not added & {"numpy", "chdb", "clickhouse-connect"}
    spans = venv.run("-c", SPANS_WITH_AN_SDK)
    assert (spans.returncode, spans.stdout.strip()) == (0, "ok"), spans.stderr
