"""examples/otel-collector: an OpenTelemetry Collector config in front of segwatch collectors.

No OpenTelemetry Collector binary runs here, so the config is checked against
the keys the contrib documentation defines: the loadbalancing exporter's README
and its ``config.schema.yaml`` (top level, ``protocol``, ``resolver``, the
static resolver), the OTLP exporter's options for ``protocol.otlp``, and the
collector's own rule that a pipeline names only components that are defined.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from segwatch.collector.config import parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "otel-collector"

LOADBALANCING_KEYS = {
    "protocol", "resolver", "routing_key", "routing_attributes",
    "timeout", "retry_on_failure", "sending_queue",
}  # fmt: skip
"""The exporter's top-level keys (README; config.schema.yaml)."""
ROUTING_KEYS = {"service", "traceID", "resource", "metric", "streamID", "attributes"}
RESOLVERS = {"static", "dns", "k8s", "aws_cloud_map"}
OTLP_EXPORTER_KEYS = {
    "tls", "headers", "compression", "timeout", "retry_on_failure", "sending_queue",
    "keepalive", "balancer_name", "auth", "authority", "read_buffer_size",
    "write_buffer_size", "wait_for_ready",
}  # fmt: skip
"""What ``protocol.otlp`` may hold: the OTLP exporter's options but ``endpoint``,
which the exporter sets to each backend it resolves."""


def _config() -> dict[str, Any]:
    loaded = yaml.safe_load((EXAMPLE / "config.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_the_loadbalancing_exporter_has_only_documented_keys() -> None:
    exporter = _config()["exporters"]["loadbalancing"]
    assert set(exporter) <= LOADBALANCING_KEYS
    assert exporter["routing_key"] == "traceID" and exporter["routing_key"] in ROUTING_KEYS
    assert set(exporter["protocol"]) == {"otlp"}
    otlp = exporter["protocol"]["otlp"]
    assert set(otlp) <= OTLP_EXPORTER_KEYS  # no endpoint: the resolver sets it
    assert otlp["tls"] == {"insecure": True}
    assert set(exporter["resolver"]) <= RESOLVERS and len(exporter["resolver"]) == 1
    assert exporter["resolver"]["static"] == {
        "hostnames": ["segwatch-1:4317", "segwatch-2:4317", "segwatch-3:4317"]
    }


def test_the_token_header_comes_from_the_environment() -> None:
    headers = _config()["exporters"]["loadbalancing"]["protocol"]["otlp"]["headers"]
    assert headers == {"authorization": "Bearer ${env:SEGWATCH_RECEIVER_TOKEN}"}


def test_pipelines_name_only_defined_components() -> None:
    config = _config()
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "logs"}  # spans, and labels (log records)
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] and pipeline["exporters"], name
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name}: {component} is not in {kind}"
                assert re.fullmatch(r"[a-z_]+(/[\w.-]+)?", component)
    assert all(p["exporters"] == ["loadbalancing"] for p in pipelines.values())


def test_every_defined_component_is_used() -> None:
    config = _config()
    used = {
        component
        for pipeline in config["service"]["pipelines"].values()
        for kind in ("receivers", "processors", "exporters")
        for component in pipeline.get(kind, [])
    }
    defined = {c for kind in ("receivers", "processors", "exporters") for c in config[kind]}
    assert used == defined


def test_the_segwatch_side_is_a_valid_segwatch_config() -> None:
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    (segwatch_yaml,) = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    config = parse_config(segwatch_yaml)
    assert config.receiver.endpoint == "0.0.0.0:4317"
    assert config.receiver.token_env == "SEGWATCH_RECEIVER_TOKEN"
    hostnames = _config()["exporters"]["loadbalancing"]["resolver"]["static"]["hostnames"]
    assert {h.rpartition(":")[2] for h in hostnames} == {"4317"}
