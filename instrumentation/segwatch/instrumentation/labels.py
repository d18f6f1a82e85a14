"""Delayed ground truth: ``log_label`` sends a label for an earlier prediction.

A label is an OTel log record with event name ``ml.label`` and attributes
``ml.prediction.id``, ``ml.model.name`` and ``ml.label.<name>``; the collector
stores it and joins it to the prediction with the same id, however much later
it arrives. It goes through the OTel logs SDK and its OTLP exporter (the logs
API is still marked experimental by OpenTelemetry Python: ``opentelemetry._logs``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry._logs import LoggerProvider, LogRecord, get_logger

from . import attributes as attr
from .values import to_attribute_value

__all__ = ["log_label"]

_logger = logging.getLogger(__name__)
_LOGGER_NAME = "segwatch.instrumentation"


def log_label(
    prediction_id: str,
    *,
    model: str,
    timestamp: int | None = None,
    logger_provider: LoggerProvider | None = None,
    **labels: Any,
) -> None:
    """Emit the ground truth for prediction ``prediction_id`` of ``model``.

    ``labels`` are the true values by name (``log_label("tx-1", model="fraud",
    is_fraud=True)``); ``timestamp`` (ns since the epoch) is when the truth
    became known, default now. Raises ``ValueError`` for a missing id, model or
    label; a failure to send is the OTel SDK's to report, never raised here.
    """
    if not isinstance(prediction_id, str) or not prediction_id:
        raise ValueError("prediction_id must be a non-empty string")
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string")
    if not labels:
        raise ValueError("give at least one label, e.g. is_fraud=True")
    record_attributes: dict[str, Any] = {
        attr.ML_PREDICTION_ID: prediction_id,
        attr.ML_MODEL_NAME: model,
    }
    for name, value in labels.items():
        converted = to_attribute_value(value)
        if converted is None:
            raise ValueError(f"label {name!r} is missing (None)")
        record_attributes[attr.ML_LABEL_PREFIX + name] = converted
    record = LogRecord(
        timestamp=timestamp if timestamp is not None else time.time_ns(),
        event_name=attr.ML_LABEL_EVENT,
        attributes=record_attributes,
    )
    try:
        get_logger(_LOGGER_NAME, logger_provider=logger_provider).emit(record)
    except Exception as exc:  # the labelling job goes on; the SDK logs export failures
        _logger.warning("segwatch: cannot emit label for %r: %s", prediction_id, exc)
