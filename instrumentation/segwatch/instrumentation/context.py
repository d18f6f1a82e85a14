"""Monitoring context: fields that segment every model call made inside them.

A context field (``language=es``) is stored in OTel baggage under
``ml.context.<name>``, so every model call inside the context records it as
the span attribute ``ml.context.<name>``, and the standard W3C baggage
propagator carries it to other services with the trace. The typical use: the
output of one model (the language a detector found) becomes a segment of the
next model's behaviour (the sentiment model's confidence).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import baggage
from opentelemetry import context as otel_context

from .attributes import ML_CONTEXT_PREFIX

__all__ = ["context", "context_attributes", "set_context"]

_logger = logging.getLogger(__name__)


def _with_fields(fields: dict[str, Any]) -> otel_context.Context:
    ctx = otel_context.get_current()
    for name, value in fields.items():
        if value is None:
            ctx = baggage.remove_baggage(ML_CONTEXT_PREFIX + name, ctx)
        else:
            ctx = baggage.set_baggage(ML_CONTEXT_PREFIX + name, _as_text(value), ctx)
    return ctx


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Within this block, every model call records ``ml.context.<name>`` for each field.

    ``None`` removes a field set by an outer context. Values are recorded as
    text (baggage carries strings).
    """
    token = otel_context.attach(_with_fields(fields))
    try:
        yield
    finally:
        otel_context.detach(token)


def set_context(name: str, value: Any) -> None:
    """Add one field to the current context, for the rest of the current OTel context.

    Prefer ``with context(...)``: a field set here stays until the enclosing
    context (a ``with context()`` block, a request's context) ends. Set inside
    a monitored call, it ends with that call.
    """
    try:
        otel_context.attach(_with_fields({name: value}))
    except Exception as exc:  # never break the caller over monitoring context
        _logger.warning("segwatch: cannot set context %r: %s", name, exc)


def context_attributes() -> dict[str, str]:
    """The ``ml.context.*`` fields of the current context, as span attributes."""
    return {
        key: str(value)
        for key, value in baggage.get_all().items()
        if key.startswith(ML_CONTEXT_PREFIX)
    }
