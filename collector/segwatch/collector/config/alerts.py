"""The ``alerts`` section: where anomalies go when they open or resolve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segwatch.clickhouse.yaml_schema import ListOf, Record, Scalar

from . import checks

__all__ = ["ALERTS_SCHEMA", "AlertsConfig", "WebhookConfig", "build_alerts"]


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    name: str = ""


@dataclass(frozen=True)
class AlertsConfig:
    webhooks: tuple[WebhookConfig, ...] = ()
    otlp_endpoint: str | None = None


ALERTS_SCHEMA = Record({
    "webhooks": ListOf(Record({"url": Scalar(str, checks.url), "name": Scalar(str)})),
    "otlp": Record({"endpoint": Scalar(str, checks.url)}),
})  # fmt: skip


def build_alerts(spec: dict[str, Any]) -> AlertsConfig:
    return AlertsConfig(
        webhooks=tuple(
            WebhookConfig(w["url"], w.get("name", ""))
            for w in spec.get("webhooks", ())
            if "url" in w
        ),
        otlp_endpoint=spec.get("otlp", {}).get("endpoint"),
    )
