"""segwatch.instrumentation: make model calls observable as OpenTelemetry spans.

This package depends on the OpenTelemetry API (and opentelemetry-instrumentation
for the scikit-learn instrumentor) only: the service configures the SDK, as OTel
instrumentations expect. Importing it loads no SDK, exporter, gRPC, numpy,
pandas or ClickHouse client.
"""

from __future__ import annotations

from . import attributes
from .context import context, set_context
from .labels import log_label
from .monitor import ModelCall, monitor

__all__ = ["ModelCall", "attributes", "context", "log_label", "monitor", "set_context"]
