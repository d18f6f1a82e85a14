"""CallReader: what a decorated model function's arguments and result say, onto its ModelCall.

The decorator's half of recording (the context manager's user calls
:class:`~.model_call.ModelCall` directly): features from the call's first
argument after ``self``, outputs and metrics from the return value, with the
monitor's recording policy applied. Plain dicts of numbers and short strings,
the common case, take a one-pass path.
"""

from __future__ import annotations

from typing import Any

from . import attributes as attr
from .arguments import first_values, looks_like_self, names_of, plain_list, split_arguments
from .model_call import CallSettings, ModelCall, batch_columns
from .tables import Rows, read_features, read_outputs
from .values import to_attribute_value

__all__ = ["NO_RESULT", "CallReader"]

NO_RESULT = object()
"""The model raised: a batch's features are still recorded, without outputs."""

_PLAIN_TYPES = (float, int, bool)


class CallReader:
    """Reads one monitor's decorated calls; shared by its calls, holds nothing between them.

    Called on the thread (or task) of the model call. Never raises: a problem
    is reported to the monitor's :class:`~.problems.ProblemLog` and the part
    that could not be read is left out.
    """

    __slots__ = (
        "_classes",
        "_feature_names",
        "_plain_policy",
        "_record_outputs",
        "_record_probabilities",
        "_settings",
    )

    def __init__(
        self,
        settings: CallSettings,
        feature_names: list[str] | None,
        classes: list[Any] | None,
        record_outputs: bool,
        record_probabilities: bool,
        plain_policy: bool,
    ) -> None:
        self._settings = settings
        self._feature_names = feature_names
        self._classes = classes
        self._record_outputs = record_outputs
        self._record_probabilities = record_probabilities
        # No allow/deny/hash rules: plain dict inputs take a one-pass fast path.
        self._plain_policy = plain_policy

    def read_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Rows | None:
        """The call's features as rows, or None (no input, or one that cannot be read)."""
        owner, data = split_arguments(args, kwargs)
        if data is None:
            return None
        names = self._feature_names or names_of(owner)
        try:
            return read_features(data, names)
        except Exception as exc:
            self._settings.problems.report("features", exc)
            return None

    def record_input(self, model_call: ModelCall, args: tuple[Any, ...], kwargs: Any) -> None:
        """Record the call's features; a batch's wait on the call for their outputs."""
        if not model_call.span.is_recording():
            return
        if self._plain_policy and args and type(args[0]) is dict:
            self._record_dict(model_call, args[0])
            return
        rows = self.read_input(args, kwargs)
        if rows is None:
            return
        if not rows.single:
            model_call._batch = rows
            return
        try:
            scalars = self._settings.policy.features(rows.scalars())
            features = {k: to_attribute_value(v) for k, v in scalars.items()}
        except Exception as exc:
            self._settings.problems.report("features", exc)
            return
        model_call._set_all(attr.ML_FEATURE_PREFIX, features)

    def _record_dict(self, model_call: ModelCall, row: dict[Any, Any]) -> None:
        """The common case, one pass: a plain dict of features, default recording policy."""
        pending = model_call._pending
        prefix = attr.ML_FEATURE_PREFIX
        policy = self._settings.policy
        longest = policy.max_string_length
        try:
            for name, value in row.items():
                kind = type(value)
                if kind is float or kind is int or kind is bool:
                    pending[prefix + name] = value
                elif kind is str:
                    if len(value) <= longest:
                        pending[prefix + name] = value
                    elif policy.record_text:  # free text asked for: truncated, as policy.text
                        pending[prefix + name] = value[:longest]
                elif value is not None:
                    try:
                        converted = to_attribute_value(value)
                    except Exception as exc:  # skip this value, keep the others
                        self._settings.problems.report("features", exc)
                        continue
                    if converted is not None:
                        pending[prefix + str(name)] = policy.text(converted)
        except Exception as exc:  # the input itself misbehaves (e.g. items() raises)
            self._settings.problems.report("features", exc)

    def record_output(self, model_call: ModelCall, result: Any, args: tuple[Any, ...]) -> None:
        """Record what the model returned (:data:`NO_RESULT` if it raised); writes a batch."""
        if not model_call.span.is_recording():
            return
        rows = model_call._batch
        if rows is None and self._record_outputs and self._record_plain(model_call, result):
            return
        outputs: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        if result is not NO_RESULT and self._record_outputs:
            try:
                outputs, metrics = read_outputs(
                    result, rows.n if rows else 1, self.classes_of(args),
                    self._record_probabilities,
                )  # fmt: skip
            except Exception as exc:
                self._settings.problems.report("outputs", exc)
        if rows is not None:
            model_call._batch = None
            model_call.batch(rows.n, rows.columns, outputs, metrics)
            return
        try:
            policy = self._settings.policy
            model_call._set_all(attr.ML_OUTPUT_PREFIX, policy.outputs(first_values(outputs)))
            model_call._set_all(attr.ML_METRIC_PREFIX, first_values(metrics))
        except Exception as exc:
            self._settings.problems.report("outputs", exc)

    def _record_plain(self, model_call: ModelCall, result: Any) -> bool:
        """The common case, one pass: a number, or a dict of numbers and short strings.

        Returns False (nothing recorded) for anything else; the general path reads it.
        """
        kind = type(result)
        if kind is float or kind is int or kind is bool:
            model_call._pending[attr.ML_OUTPUT_PREFIX + attr.PREDICTION_OUTPUT] = result
            return True
        if kind is not dict:
            return False
        longest = self._settings.policy.max_string_length
        values = result.values()
        if not all(
            type(v) in _PLAIN_TYPES or (type(v) is str and len(v) <= longest) for v in values
        ):
            return False
        pending = model_call._pending
        for name, value in result.items():
            pending[attr.ML_OUTPUT_PREFIX + str(name)] = value
        return True

    def row_columns(self, rows: Rows, result: Any, args: tuple[Any, ...]) -> dict[str, Any]:
        """``per_row``: the call's columns, inputs and outputs, policy applied (may raise)."""
        outputs, metrics = read_outputs(
            result, rows.n, self.classes_of(args), self._record_probabilities
        )
        return batch_columns(self._settings.policy, rows.columns, outputs, metrics)

    def classes_of(self, args: tuple[Any, ...]) -> list[Any] | None:
        """The class labels: the monitor's, else the fitted estimator's ``classes_``."""
        if self._classes is not None:
            return self._classes
        owner = args[0] if args and looks_like_self(args[0]) else None
        classes = getattr(owner, "classes_", None)
        return plain_list(classes) if classes is not None else None
