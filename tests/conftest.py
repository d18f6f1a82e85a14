"""Shared fixtures. Everything runs against the real embedded ClickHouse (chdb).

chdb allows one store directory per process at a time, so every fixture that
opens a store closes it again before the next test.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from wheel_build import build_wheel

if TYPE_CHECKING:
    from segwatch.collector.service.serving import StoreServer


class SpanRecorder:
    """A real OTel SDK tracer provider whose finished spans can be encoded as OTLP."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> list:  # type: ignore[type-arg]
        return list(self.exporter.get_finished_spans())

    def request(self) -> ExportTraceServiceRequest:
        """The finished spans as the OTLP request the SDK exporter would send; clears them."""
        request = encode_spans(self.exporter.get_finished_spans())
        self.exporter.clear()
        return request


@pytest.fixture
def recorder() -> Iterator[SpanRecorder]:
    rec = SpanRecorder()
    yield rec
    rec.provider.shutdown()


@pytest.fixture
def store_dsn(tmp_path: Path) -> str:
    return f"chdb://{tmp_path / 'store'}"


@pytest.fixture
def collector(store_dsn: str):  # type: ignore[no-untyped-def]
    """A running collector on loopback ports chosen by the OS, detectors not scheduled."""
    from segwatch.collector.config import (
        ApiConfig,
        CollectorConfig,
        ReceiverConfig,
        SchedulerConfig,
        StorageConfig,
    )
    from segwatch.collector.service.collector import Collector

    config = CollectorConfig(
        storage=StorageConfig(dsn=store_dsn),
        receiver=ReceiverConfig(endpoint="127.0.0.1:0"),
        api=ApiConfig(endpoint="127.0.0.1:0"),
        scheduler=SchedulerConfig(enabled=False),
    )
    running = Collector(config)
    running.start()
    yield running
    running.shutdown()


@pytest.fixture
def client(store_dsn: str):  # type: ignore[no-untyped-def]
    from segwatch.clickhouse.migrate import apply_migrations
    from segwatch.clickhouse.store import open_client, parse_dsn

    opened = open_client(parse_dsn(store_dsn))
    apply_migrations(opened)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's wheel, built once per run (tests/test_packaging.py, test_install.py)."""
    directory = tmp_path_factory.mktemp("wheel")
    built = build_wheel(directory)
    assert built.returncode == 0, built.stderr
    (found,) = directory.glob("segwatch-*.whl")
    return found


@pytest.fixture
def store_server(tmp_path: Path) -> Iterator[StoreServer]:
    """``segwatch serve`` in this process, on an embedded store of its own: a ClickHouse
    server for the test (collectors and clients reach it at ``store_server.url``).

    Imported here, not at the top: ``bench/sanitize.sh`` runs this conftest under
    AddressSanitizer, where loading the embedded engine aborts."""
    from segwatch.collector.config.collector_config import CollectorConfig
    from segwatch.collector.config.serve import ServeConfig
    from segwatch.collector.config.storage import StorageConfig
    from segwatch.collector.service.serving import StoreServer

    server = StoreServer(CollectorConfig(
        storage=StorageConfig(dsn=f"chdb://{tmp_path / 'store'}"),
        serve=ServeConfig(endpoint="127.0.0.1:0"),
    ))  # fmt: skip
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """``segwatch demo --data DIR --json``, run once per run by the real command in a
    subprocess (``args[-2]`` is DIR): its exit code, stdout (the findings as JSON) and
    stderr (the story). ``demo_store`` is its directory."""
    directory = tmp_path_factory.mktemp("demo") / "store"
    return subprocess.run(
        [sys.executable, "-m", "segwatch.collector.cli", "demo", "--data", str(directory),
         "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="session")
def demo_store(demo_run: subprocess.CompletedProcess[str]) -> Path:
    """The directory of an embedded store holding ``segwatch demo``'s data (two models, 75
    minutes, the injected drift in fraud / country=BR, the detectors' findings). Read it
    only: a test that writes copies it first (``shutil.copytree(..., symlinks=True)``: the
    engine links its tables relatively). Open it with ``chdb://<path>`` and close the
    client after."""
    assert demo_run.returncode == 0, demo_run.stderr
    return Path(demo_run.args[-2])
