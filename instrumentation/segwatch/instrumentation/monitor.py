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
import random
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
from .arguments import plain_list
from .batch_writer import DEFAULT_COLUMNS_ABOVE, row_attributes
from .call_reader import NO_RESULT, CallReader
from .context import context_attributes
from .model_call import CallSettings, ModelCall
from .privacy import RecordingPolicy
from .problems import ProblemLog
from .tables import Rows

__all__ = ["ModelCall", "monitor"]

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

    The settings are read once, when the monitor is made; its attributes of
    the same names show them.
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
        _check(model, operation, columns_above, sample_rate)
        self.model = model
        self.version = None if version is None else str(version)
        self.stage = stage
        self.operation = operation
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.classes = plain_list(classes) if classes is not None else None
        self.per_row = per_row
        self.record_outputs = record_outputs
        self.record_probabilities = record_probabilities
        self.columns_above = columns_above
        self.sample_rate = float(sample_rate)
        self.policy = RecordingPolicy.build(
            features_allow, features_deny, hash_features, _hash_key(hash_key, hash_salt),
            max_string_length, record_text,
        )  # fmt: skip
        problems = ProblemLog(model)
        self.problems: Counter[str] = problems.counts
        """How often each kind of problem happened (``features``, ``outputs``, ...)."""
        self._settings = CallSettings(self.policy, columns_above, problems)
        self._reader = CallReader(
            self._settings, self.feature_names, self.classes, record_outputs,
            record_probabilities,
            plain_policy=not (features_allow is not None or features_deny or hash_features),
        )  # fmt: skip
        # A ProxyTracer when no provider is set yet: it follows a provider set later.
        self._tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)
        self._span_name = attr.SPAN_NAME_FORMAT.format(operation=operation, model=model)
        self._base_attributes = _span_attributes(model, self.version, stage, operation,
                                                 self.sample_rate)  # fmt: skip
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
            yield ModelCall(self._settings, INVALID_SPAN)  # not sampled: records nothing
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
            self._settings.problems.report("span", exc)
            return INVALID_SPAN

    @contextmanager
    def _activate(self, span: Span, end_time: int | None = None) -> Iterator[ModelCall]:
        model_call = ModelCall(self._settings, span)
        if span.is_recording():
            try:
                model_call._pending.update(context_attributes())
            except Exception as exc:
                self._settings.problems.report("context", exc)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=True):
                yield model_call
        finally:
            model_call._flush()
            try:
                span.end(end_time=end_time)
            except Exception as exc:  # a span processor that raises must not reach the model
                self._settings.problems.report("span", exc)

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
        record_input, record_output = self._reader.record_input, self._reader.record_output
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
                    record_input(model_call, args, kwargs)
                    try:
                        result = await func(*args, **kwargs)
                    except BaseException:
                        record_output(model_call, NO_RESULT, args)
                        raise
                    record_output(model_call, result, args)
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
                record_input(model_call, args, kwargs)
                try:
                    result = func(*args, **kwargs)
                except BaseException:
                    record_output(model_call, NO_RESULT, args)
                    raise
                record_output(model_call, result, args)
                return result

        return cast(F, wrapper)

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[object, Any]:
        """How to run one decorated call: unmonitored, one span per row, or one span.

        The sampling decision is made here, once per call.
        """
        if not self._sampled():
            return _PLAIN, None
        if self.per_row:
            rows = self._reader.read_input(args, kwargs)
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
            self._settings.problems.report("span", exc)
            return INVALID_SPAN

    def _emit_rows(self, rows: Rows, result: Any, args: tuple[Any, ...], started: int) -> None:
        """``per_row``: one span per input row, all with the call's start and end."""
        try:
            columns = self._reader.row_columns(rows, result, args)
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
            self._settings.problems.report("rows", exc)


_PLAIN, _ROWS, _SPAN = object(), object(), object()
"""How :meth:`monitor._prepare` says a decorated call runs."""


def _check(model: str, operation: str, columns_above: int, sample_rate: float) -> None:
    """``ValueError`` for a setting no monitor can work with."""
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string")
    if not operation:
        raise ValueError("operation must be a non-empty string")
    if columns_above < 0:
        raise ValueError("columns_above must be at least 0")
    if not 0 < sample_rate <= 1:
        raise ValueError("sample_rate must be in (0, 1]")


def _hash_key(hash_key: str | bytes | None, hash_salt: str | None) -> str | bytes | None:
    """``hash_key=``, or the deprecated ``hash_salt=`` (with its ``DeprecationWarning``)."""
    if hash_salt is None:
        return hash_key
    if hash_key is not None:
        raise ValueError("pass hash_key= only: hash_salt= is its deprecated name")
    warnings.warn(
        "monitor(hash_salt=) is deprecated: pass hash_key= (or set SEGWATCH_HASH_KEY); "
        "the salt is used as the HMAC-SHA256 key, so hashes differ from before",
        DeprecationWarning,
        stacklevel=3,
    )
    return hash_salt or None


def _span_attributes(
    model: str, version: str | None, stage: str, operation: str, sample_rate: float
) -> dict[str, str | float]:
    """The attributes every span of one monitor starts with."""
    attributes: dict[str, str | float] = {
        attr.ML_MODEL_NAME: model,
        attr.ML_MODEL_STAGE: stage,
        attr.ML_OPERATION: operation,
    }
    if version is not None:
        attributes[attr.ML_MODEL_VERSION] = version
    if sample_rate < 1:
        # Each recorded call stands for 1 / rate calls: the collector weights by it.
        attributes[attr.ML_SAMPLE_WEIGHT] = 1 / sample_rate
    return attributes
