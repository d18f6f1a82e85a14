"""``monitor``: one object that is both a decorator and a context manager.

It turns a model call into an OTel span named ``predict {model}`` carrying the
segwatch span convention (see :mod:`segwatch.instrumentation.attributes`).

Contract: the instrumentation never raises into the model call and never blocks
it. Any failure while reading features or outputs is logged (once per monitor
and problem) and the call goes on; an exception *from the model* propagates
unchanged and is recorded on the span. With no OTel SDK configured the span is
non-recording and nothing is extracted, so the cost is a few attribute lookups.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span

from . import attributes as attr
from .arguments import first_values, looks_like_self, names_of, plain_list, split_arguments
from .batch_writer import DEFAULT_COLUMNS_ABOVE, row_attributes
from .context import context_attributes
from .model_call import ModelCall, batch_columns
from .privacy import RecordingPolicy
from .tables import Rows, read_features, read_outputs
from .values import to_attribute_value

__all__ = ["ModelCall", "monitor"]

_logger = logging.getLogger(__name__)
_TRACER_NAME = "segwatch.instrumentation"

F = TypeVar("F", bound=Callable[..., Any])


class monitor:
    """Monitor a model: decorate its predict function, or wrap a call with ``with``.

    >>> @monitor(model="fraud", version="3")
    ... def predict(features: dict) -> float: ...

    As a decorator it reads features from the call's first argument (a dict,
    a pandas row or one-row DataFrame, or a 1-D array with ``feature_names``)
    and outputs from the return value (a number becomes ``ml.output.prediction``,
    a dict one output per key). Works on sync and async functions.

    As a context manager it yields a :class:`ModelCall` to record features,
    outputs and metrics explicitly. ``call(start_time=...)`` records a call
    that happened earlier (replays and backfills).

    Privacy (:mod:`.privacy`): ``features_allow`` / ``features_deny`` choose the
    features; ``hash_features`` are recorded as HMAC-SHA256 under a secret key,
    ``hash_key=`` or else the ``SEGWATCH_HASH_KEY`` environment variable, read
    here. Without a key the monitor is not made (``ValueError``): bad settings
    fail when the service starts, never during a model call. ``hash_salt=`` is
    the key's deprecated name (``DeprecationWarning``; the hashes differ from
    the salted SHA-256 it used to give).
    """

    def __init__(
        self,
        model: str,
        version: str | None = None,
        stage: str = "serving",
        *,
        operation: str = "predict",
        feature_names: Sequence[str] | None = None,
        classes: Sequence[Any] | None = None,
        per_row: bool = False,
        record_outputs: bool = True,
        record_probabilities: bool = False,
        columns_above: int = DEFAULT_COLUMNS_ABOVE,
        sample_rate: float = 1.0,
        features_allow: Collection[str] | None = None,
        features_deny: Collection[str] = (),
        hash_features: Collection[str] = (),
        hash_key: str | bytes | None = None,
        hash_salt: str | None = None,
        max_string_length: int = 128,
        record_text: bool = False,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string")
        if not operation:
            raise ValueError("operation must be a non-empty string")
        self.model = model
        self.version = None if version is None else str(version)
        self.stage = stage
        self.operation = operation
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.classes = plain_list(classes) if classes is not None else None
        self.per_row = per_row
        self.record_outputs = record_outputs
        self.record_probabilities = record_probabilities
        if columns_above < 0:
            raise ValueError("columns_above must be at least 0")
        self.columns_above = columns_above
        if not 0 < sample_rate <= 1:
            raise ValueError("sample_rate must be in (0, 1]")
        self.sample_rate = float(sample_rate)
        if hash_salt is not None:
            if hash_key is not None:
                raise ValueError("pass hash_key= only: hash_salt= is its deprecated name")
            warnings.warn(
                "monitor(hash_salt=) is deprecated: pass hash_key= (or set SEGWATCH_HASH_KEY); "
                "the salt is used as the HMAC-SHA256 key, so hashes differ from before",
                DeprecationWarning,
                stacklevel=2,
            )
            hash_key = hash_salt or None
        self.policy = RecordingPolicy.build(
            features_allow, features_deny, hash_features, hash_key, max_string_length, record_text
        )
        # No allow/deny/hash rules: plain dict inputs take a one-pass fast path.
        self._plain_policy = not (features_allow is not None or features_deny or hash_features)
        # A ProxyTracer when no provider is set yet: it follows a provider set later.
        self._tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)
        self._span_name = attr.SPAN_NAME_FORMAT.format(operation=operation, model=model)
        self._base_attributes: dict[str, str | float] = {
            attr.ML_MODEL_NAME: model,
            attr.ML_MODEL_STAGE: stage,
            attr.ML_OPERATION: operation,
        }
        if self.version is not None:
            self._base_attributes[attr.ML_MODEL_VERSION] = self.version
        if self.sample_rate < 1:
            # Each recorded call stands for 1 / rate calls: the collector weights by it.
            self._base_attributes[attr.ML_SAMPLE_WEIGHT] = 1 / self.sample_rate
        self.problems: Counter[str] = Counter()
        """How often each kind of problem happened (``features``, ``outputs``, ...)."""
        self._last_logged: dict[str, float] = {}
        self._problems_lock = threading.Lock()
        # Open ``with monitor:`` blocks, per thread and task, so one monitor
        # object can be entered concurrently and re-entrantly.
        self._active: ContextVar[tuple[Any, ...]] = ContextVar(
            f"segwatch_monitor_{id(self)}", default=()
        )

    # -- context manager ---------------------------------------------------
    @contextmanager
    def call(
        self, start_time: int | None = None, end_time: int | None = None
    ) -> Iterator[ModelCall]:
        """Record one model call.

        ``start_time`` and ``end_time`` (ns since the epoch) default to now; set
        them to record a call that happened earlier (replays, backfills).
        """
        if not self._sampled():
            yield ModelCall(self, INVALID_SPAN)  # not sampled: records nothing
            return
        span = self._start_span(start_time)
        with self._activate(span, end_time) as model_call:
            yield model_call

    def _sampled(self) -> bool:
        return self.sample_rate >= 1 or random.random() < self.sample_rate

    def _start_span(self, start_time: int | None) -> Span:
        try:
            return self._tracer.start_span(
                self._span_name, attributes=self._base_attributes, start_time=start_time
            )
        except Exception as exc:  # an SDK failure must not stop the model call
            self._report("span", exc)
            return INVALID_SPAN

    @contextmanager
    def _activate(self, span: Span, end_time: int | None = None) -> Iterator[ModelCall]:
        model_call = ModelCall(self, span)
        if span.is_recording():
            try:
                model_call._pending.update(context_attributes())
            except Exception as exc:
                self._report("context", exc)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=True):
                yield model_call
        finally:
            model_call._flush()
            try:
                span.end(end_time=end_time)
            except Exception as exc:  # a span processor that raises must not reach the model
                self._report("span", exc)

    def __enter__(self) -> ModelCall:
        manager = self.call()
        model_call = manager.__enter__()
        self._active.set((*self._active.get(), manager))
        return model_call

    def __exit__(self, *exc_info: Any) -> None:
        *outer, manager = self._active.get()
        self._active.set(tuple(outer))
        manager.__exit__(*exc_info)

    # -- decorator -----------------------------------------------------------
    def __call__(self, func: F) -> F:
        # No SDK, or not sampled: the call runs unmonitored after one start_span.
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                mode, state = self._prepare(args, kwargs)
                if mode is _PLAIN:
                    return await func(*args, **kwargs)
                if mode is _ROWS:
                    rows, parent = state
                    with trace.use_span(parent, end_on_exit=True):
                        started = time.time_ns()
                        result = await func(*args, **kwargs)
                        self._emit_rows(rows, result, args, started)
                        return result
                with self._activate(state) as model_call:
                    self._record_input(model_call, args, kwargs)
                    try:
                        result = await func(*args, **kwargs)
                    except BaseException:
                        self._record_output(model_call, _NO_RESULT, args)
                        raise
                    self._record_output(model_call, result, args)
                    return result

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mode, state = self._prepare(args, kwargs)
            if mode is _PLAIN:
                return func(*args, **kwargs)
            if mode is _ROWS:
                rows, parent = state
                with trace.use_span(parent, end_on_exit=True):
                    started = time.time_ns()
                    result = func(*args, **kwargs)
                    self._emit_rows(rows, result, args, started)
                    return result
            with self._activate(state) as model_call:
                self._record_input(model_call, args, kwargs)
                try:
                    result = func(*args, **kwargs)
                except BaseException:
                    self._record_output(model_call, _NO_RESULT, args)
                    raise
                self._record_output(model_call, result, args)
                return result

        return cast(F, wrapper)

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[object, Any]:
        """How to run one decorated call: unmonitored, one span per row, or one span.

        The sampling decision is made here, once per call.
        """
        if not self._sampled():
            return _PLAIN, None
        if self.per_row:
            rows = self._read_input(args, kwargs)
            if rows is not None and not rows.single:
                parent = self._start_rows_span()
                if not parent.get_span_context().is_valid:
                    return _PLAIN, None
                return _ROWS, (rows, parent)
        span = self._start_span(None)
        if not span.get_span_context().is_valid:
            return _PLAIN, None
        return _SPAN, span

    def _start_rows_span(self) -> Span:
        """``per_row``: the call's own span; not a model call (no ``ml.*``), its rows are."""
        try:
            return self._tracer.start_span(f"{self._span_name} rows")
        except Exception as exc:
            self._report("span", exc)
            return INVALID_SPAN

    def _read_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Rows | None:
        owner, data = split_arguments(args, kwargs)
        if data is None:
            return None
        names = self.feature_names or names_of(owner)
        try:
            return read_features(data, names)
        except Exception as exc:
            self._report("features", exc)
            return None

    def _record_input(self, model_call: ModelCall, args: tuple[Any, ...], kwargs: Any) -> None:
        if not model_call.span.is_recording():
            return
        if self._plain_policy and args and type(args[0]) is dict:
            self._record_dict(model_call, args[0])
            return
        rows = self._read_input(args, kwargs)
        if rows is None:
            return
        if not rows.single:
            model_call._batch = rows
            return
        try:
            scalars = self.policy.features(rows.scalars())
            features = {k: to_attribute_value(v) for k, v in scalars.items()}
        except Exception as exc:
            self._report("features", exc)
            return
        model_call._set_all(attr.ML_FEATURE_PREFIX, features)

    def _record_dict(self, model_call: ModelCall, row: dict[Any, Any]) -> None:
        """The common case, one pass: a plain dict of features, default recording policy."""
        pending = model_call._pending
        prefix = attr.ML_FEATURE_PREFIX
        longest = self.policy.max_string_length
        try:
            for name, value in row.items():
                kind = type(value)
                if kind is float or kind is int or kind is bool:
                    pending[prefix + name] = value
                elif kind is str:
                    if len(value) <= longest:
                        pending[prefix + name] = value
                elif value is not None:
                    try:
                        converted = to_attribute_value(value)
                    except Exception as exc:  # skip this value, keep the others
                        self._report("features", exc)
                        continue
                    if converted is not None:
                        pending[prefix + str(name)] = self.policy.text(converted)
        except Exception as exc:  # the input itself misbehaves (e.g. items() raises)
            self._report("features", exc)

    def _record_output(self, model_call: ModelCall, result: Any, args: tuple[Any, ...]) -> None:
        if not model_call.span.is_recording():
            return
        rows = model_call._batch
        if rows is None and self.record_outputs and _record_plain_output(model_call, result):
            return
        outputs: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        if result is not _NO_RESULT and self.record_outputs:
            try:
                outputs, metrics = read_outputs(
                    result, rows.n if rows else 1, self._classes_of(args),
                    self.record_probabilities,
                )  # fmt: skip
            except Exception as exc:
                self._report("outputs", exc)
        if rows is not None:
            model_call._batch = None
            model_call.batch(rows.n, rows.columns, outputs, metrics)
            return
        try:
            model_call._set_all(attr.ML_OUTPUT_PREFIX, self.policy.outputs(first_values(outputs)))
            model_call._set_all(attr.ML_METRIC_PREFIX, first_values(metrics))
        except Exception as exc:
            self._report("outputs", exc)

    def _classes_of(self, args: tuple[Any, ...]) -> list[Any] | None:
        if self.classes is not None:
            return self.classes
        owner = args[0] if args and looks_like_self(args[0]) else None
        classes = getattr(owner, "classes_", None)
        return plain_list(classes) if classes is not None else None

    def _emit_rows(self, rows: Rows, result: Any, args: tuple[Any, ...], started: int) -> None:
        """``per_row``: one span per input row, all with the call's start and end."""
        try:
            outputs, metrics = read_outputs(
                result, rows.n, self._classes_of(args), self.record_probabilities
            )
            columns = batch_columns(self.policy, rows.columns, outputs, metrics)
            ended = time.time_ns()
            context = context_attributes()
            for i in range(rows.n):
                span = self._tracer.start_span(
                    self._span_name,
                    attributes={**self._base_attributes, **context, **row_attributes(columns, i)},
                    start_time=started,
                )
                span.end(end_time=ended)
        except Exception as exc:
            self._report("rows", exc)

    def _report(self, what: str, exc: BaseException) -> None:
        """Count a problem; log it at most once a minute per kind (with the count since).

        A model called 1,000 times a second must not flood the logs, and must
        never see the exception.
        """
        key = f"{what}:{type(exc).__name__}"
        now = time.monotonic()
        with self._problems_lock:
            self.problems[what] += 1
            last = self._last_logged.get(key)
            if last is not None and now - last < LOG_INTERVAL_SECONDS:
                return
            self._last_logged[key] = now
            count = self.problems[what]
        _logger.warning(
            "segwatch: cannot record %s of model %r (%d so far): %s", what, self.model, count, exc
        )


LOG_INTERVAL_SECONDS = 60.0
"""The same kind of problem is logged at most once per this many seconds."""


_NO_RESULT = object()
"""The model raised: a batch's features are still recorded, without outputs."""


_PLAIN_TYPES = (float, int, bool)


def _record_plain_output(model_call: ModelCall, result: Any) -> bool:
    """The common case, one pass: a number, or a dict of numbers and short strings.

    Returns False (nothing recorded) for anything else; the general path reads it.
    """
    kind = type(result)
    if kind is float or kind is int or kind is bool:
        model_call._pending[attr.ML_OUTPUT_PREFIX + attr.PREDICTION_OUTPUT] = result
        return True
    if kind is not dict:
        return False
    longest = model_call._monitor.policy.max_string_length
    values = result.values()
    if not all(type(v) in _PLAIN_TYPES or (type(v) is str and len(v) <= longest) for v in values):
        return False
    pending = model_call._pending
    for name, value in result.items():
        pending[attr.ML_OUTPUT_PREFIX + str(name)] = value
    return True


_PLAIN, _ROWS, _SPAN = object(), object(), object()
"""How :meth:`monitor._prepare` says a decorated call runs."""
