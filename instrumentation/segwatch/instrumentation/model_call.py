"""ModelCall: what one monitored call records, single row or batch.

A call knows its monitor only through :class:`CallSettings` (the policy, the
batch threshold, the problem log): the monitor builds on this module, never
the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from . import attributes as attr
from .batch_writer import batch_attributes
from .privacy import RecordingPolicy
from .problems import ProblemLog
from .tables import Rows
from .values import AttributeScalar, to_attribute_value

__all__ = ["CallSettings", "ModelCall", "attr_name", "batch_columns"]


@dataclass(frozen=True, slots=True)
class CallSettings:
    """What every call of one monitor shares, fixed when the monitor is made."""

    policy: RecordingPolicy
    columns_above: int
    """Batches of more rows than this go as ``ml.batch.columns``."""
    problems: ProblemLog


class ModelCall:
    """What one monitored call records; handed out by ``with monitor(...) as call``.

    Not thread-safe: one call belongs to the thread (or task) that made it.
    Every method swallows its own errors (the contract in :mod:`.monitor`).
    """

    __slots__ = ("_batch", "_pending", "_settings", "_span")

    def __init__(self, settings: CallSettings, span: Span) -> None:
        self._settings = settings
        self._span = span
        self._batch: Rows | None = None  # a batch's feature columns, until its outputs come
        # Attributes are gathered here and set on the span once, when the call
        # ends: every set_attributes call takes the span's lock and validates.
        self._pending: dict[str, Any] = {}

    @property
    def span(self) -> Span:
        """The OTel span of this call, for anything the convention does not cover."""
        return self._span

    def features(self, **values: Any) -> None:
        """Record input features; ``None`` marks a feature MISSING."""
        if self._span.is_recording():
            self._record(attr.ML_FEATURE_PREFIX, self._settings.policy.features(values))

    def outputs(self, **values: Any) -> None:
        """Record model outputs (score, class, ...)."""
        if self._span.is_recording():
            self._record(attr.ML_OUTPUT_PREFIX, self._settings.policy.outputs(values))

    def metric(self, name: str, value: float) -> None:
        """Record one numeric behaviour metric, e.g. ``confidence``."""
        self._record(attr.ML_METRIC_PREFIX, {name: value})

    def prediction_id(self, prediction_id: str) -> None:
        """Set the id that joins delayed labels to this prediction."""
        if self._span.is_recording():
            self._pending[attr.ML_PREDICTION_ID] = str(prediction_id)

    def batch(self, n: int, features: dict[str, Any], outputs: dict[str, Any] | None = None,
              metrics: dict[str, Any] | None = None) -> None:  # fmt: skip
        """Record a call on ``n`` rows: each value a sequence (list, array, Series) of ``n``.

        Written as one batch span: plain arrays for small batches,
        ``ml.batch.columns`` for large ones (see the README).
        """
        if not self._span.is_recording():
            return
        try:
            columns = batch_columns(self._settings.policy, features, outputs or {}, metrics or {})
            self._pending.update(batch_attributes(columns, n, self._settings.columns_above))
        except Exception as exc:
            self._settings.problems.report("batch", exc)

    def _record(self, prefix: str, values: dict[str, Any]) -> None:
        if not self._span.is_recording():
            return
        converted: dict[str, AttributeScalar | None] = {}
        for name, value in values.items():
            try:
                converted[name] = to_attribute_value(value)
            except Exception as exc:  # skip this value, keep the others
                self._settings.problems.report(prefix[3:].rstrip("."), exc)
        self._set_all(prefix, converted)

    def _set_all(self, prefix: str, values: dict[str, AttributeScalar | None]) -> None:
        pending = self._pending
        for name, value in values.items():
            if value is not None:
                pending[prefix + name] = value

    def _flush(self) -> None:
        """Set everything recorded on the span, in one call (at the end of the call)."""
        if self._pending:
            try:
                self._span.set_attributes(self._pending)
            except Exception as exc:
                self._settings.problems.report("attributes", exc)
            self._pending = {}


def attr_name(prefix: str, name: str) -> str:
    """``ml.feature.`` + ``amount`` → ``feature.amount``: a column name of a batch."""
    return prefix[3:] + str(name)


def batch_columns(
    policy: RecordingPolicy,
    features: dict[str, Any],
    outputs: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """A batch's columns keyed ``feature.x``, ``output.y``, ``metric.z``, policy applied."""
    columns = {
        attr_name(attr.ML_FEATURE_PREFIX, k): v for k, v in policy.feature_columns(features).items()
    }
    columns.update({
        attr_name(attr.ML_OUTPUT_PREFIX, k): v for k, v in policy.output_columns(outputs).items()
    })  # fmt: skip
    columns.update({attr_name(attr.ML_METRIC_PREFIX, k): v for k, v in metrics.items()})
    return columns
