"""The segwatch span convention: attribute and event names.

These names are a public contract shared by the instrumentation, the collector
and every other client that speaks OTLP (see the README's convention table).
"""

from __future__ import annotations

from typing import Final

SPAN_NAME_FORMAT: Final = "{operation} {model}"
"""Span name: the operation, then the model, e.g. ``predict fraud``."""

ML_MODEL_NAME: Final = "ml.model.name"
"""Which model made the call (string, required: spans without it are not model calls)."""

ML_MODEL_VERSION: Final = "ml.model.version"
"""Model version (string); versions are compared per segment."""

ML_MODEL_STAGE: Final = "ml.model.stage"
"""Deployment stage: ``serving``, ``shadow``, ``canary``, ``training`` or ``validation``."""

ML_OPERATION: Final = "ml.operation"
"""What the call did: ``predict``, ``predict_proba``, ``transform``, ..."""

ML_PREDICTION_ID: Final = "ml.prediction.id"
"""Identifier that joins a delayed label to this prediction (string)."""

ML_FEATURE_PREFIX: Final = "ml.feature."
"""``ml.feature.<name>``: one input feature (number, string or bool); absent = MISSING."""

ML_OUTPUT_PREFIX: Final = "ml.output."
"""``ml.output.<name>``: one output of the model (score, class, ...)."""

ML_METRIC_PREFIX: Final = "ml.metric."
"""``ml.metric.<name>``: a numeric behaviour metric (confidence, latency, ...)."""

ML_CONTEXT_PREFIX: Final = "ml.context."
"""``ml.context.<name>``: a monitoring-context field, e.g. a language found upstream."""

ML_BATCH_SIZE: Final = "ml.batch.size"
"""Rows in a batch span; each feature/output/metric value is then an array of that length."""

ML_BATCH_COLUMNS: Final = "ml.batch.columns"
"""Large batches: the same columns in one compact, versioned bytes encoding."""

ML_SAMPLE_WEIGHT: Final = "ml.sample.weight"
"""How many calls this span stands for (1 / sampling rate)."""

ML_LABEL_EVENT: Final = "ml.label"
"""Event name of the log record that carries delayed ground truth."""

ML_LABEL_PREFIX: Final = "ml.label."
"""``ml.label.<name>``: one ground-truth value on an ``ml.label`` log record."""

ML_ANOMALY_EVENT: Final = "ml.anomaly"
"""Event name of the log record that reports an anomaly."""

ML_ANOMALY_PREFIX: Final = "ml.anomaly."
"""``ml.anomaly.*``: detector, score, threshold, segment, quantity, window."""

PREDICTION_OUTPUT: Final = "prediction"
"""Output name used when a model returns a bare number or string."""

STAGES: Final = frozenset({"serving", "shadow", "canary", "training", "validation"})
"""The stages the convention names."""
