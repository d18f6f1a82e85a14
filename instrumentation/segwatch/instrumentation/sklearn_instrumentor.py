"""SklearnInstrumentor: monitor scikit-learn models with no change to the service.

Registered under the ``opentelemetry_instrumentor`` entry point as ``sklearn``,
so ``opentelemetry-instrument python app.py`` monitors every fitted
estimator's ``predict``, ``predict_proba``, ``decision_function`` and
``transform``. A ``Pipeline`` is one model call: the calls its steps make
inside it are not recorded again. Models with a scikit-learn API from
LightGBM and XGBoost are covered by the same wrapper.

Model name: the estimator's ``segwatch_model_name`` attribute, else its class
name. Version: ``segwatch_model_version``, else a stable hash of its
parameters and fitted attributes (so a retrained model is a new version).

Requires ``opentelemetry-instrumentation`` (which brings ``wrapt``), as every
OTel instrumentation does; importing :mod:`segwatch.instrumentation` alone
does not load this module.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import weakref
from collections.abc import Collection, Iterator
from contextvars import ContextVar
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from .monitor import monitor

__all__ = ["SklearnInstrumentor", "model_version"]

_logger = logging.getLogger(__name__)

METHODS = ("predict", "predict_proba", "decision_function", "transform")
# Training calls predict/transform internally (a scaler's fit_transform, a label
# encoder inside LightGBM's fit): nothing inside these is a model call.
QUIET_METHODS = ("fit", "fit_transform", "fit_predict", "partial_fit")
_OUTPUTLESS = {"transform"}  # a transform's output is a matrix, not a prediction
# scikit-learn API classes of other libraries, imported only if installed.
_THIRD_PARTY = {
    "lightgbm": ("LGBMClassifier", "LGBMRegressor", "LGBMRanker"),
    "xgboost": ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor"),
}
_INSIDE: ContextVar[bool] = ContextVar("segwatch_sklearn_inside", default=False)


def model_version(estimator: Any) -> str:
    """A stable hash of an estimator's parameters and fitted attributes (12 hex digits)."""
    digest = hashlib.sha256(type(estimator).__qualname__.encode())
    try:
        params = estimator.get_params(deep=False)
    except Exception:
        params = {}
    digest.update(repr(sorted((k, repr(v)) for k, v in params.items())).encode())
    for name in sorted(vars(estimator)):
        if not name.endswith("_") or name.startswith("_"):
            continue  # scikit-learn names fitted attributes like coef_
        value = vars(estimator)[name]
        tobytes = getattr(value, "tobytes", None)
        if callable(tobytes):
            digest.update(name.encode() + bytes(tobytes()))
        elif isinstance(value, (int, float, str, bool, tuple)):
            digest.update(f"{name}={value!r}".encode())
    return digest.hexdigest()[:12]


def _estimator_classes() -> Iterator[type]:
    """Every class to patch: scikit-learn's estimators, Pipeline, LightGBM's and XGBoost's."""
    from sklearn.base import BaseEstimator
    from sklearn.utils import all_estimators

    seen: set[type] = set()
    for _, cls in all_estimators():
        seen.add(cls)
    from sklearn.base import ClusterMixin, OutlierMixin, TransformerMixin
    from sklearn.pipeline import Pipeline

    seen.update({Pipeline, TransformerMixin, ClusterMixin, OutlierMixin})
    for module_name, names in _THIRD_PARTY.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a broken optional library must not stop the service
            _logger.warning("segwatch: cannot import %s: %s", module_name, exc)
            continue
        seen.update(getattr(module, n) for n in names if hasattr(module, n))
    stack = list(BaseEstimator.__subclasses__())  # user classes imported already
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.add(cls)
            stack.extend(cls.__subclasses__())
    yield from seen


class SklearnInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Patches estimator methods with ``wrapt``; ``uninstrument()`` undoes every patch."""

    def __init__(self) -> None:
        super().__init__()
        self._patched: list[tuple[type, str]] = []
        self._monitors: weakref.WeakKeyDictionary[Any, dict[str, monitor]] = (
            weakref.WeakKeyDictionary()
        )
        self._tracer_provider: Any = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("scikit-learn >= 1.0",)

    def _instrument(self, **kwargs: Any) -> None:
        self._tracer_provider = kwargs.get("tracer_provider")
        for cls in _estimator_classes():
            for method in (*METHODS, *QUIET_METHODS):
                # Functions, and descriptors such as Pipeline's available_if methods.
                if method not in vars(cls) or not hasattr(vars(cls)[method], "__get__"):
                    continue
                wrapper = self._wrapper if method in METHODS else _quiet
                try:
                    wrapt.wrap_function_wrapper(cls, method, wrapper)
                except Exception as exc:
                    _logger.debug("segwatch: cannot wrap %s.%s: %s", cls, method, exc)
                    continue
                self._patched.append((cls, method))

    def _uninstrument(self, **kwargs: Any) -> None:
        for cls, method in reversed(self._patched):
            unwrap(cls, method)
        self._patched.clear()
        self._monitors = weakref.WeakKeyDictionary()

    def _wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if _INSIDE.get() or instance is None:
            return wrapped(*args, **kwargs)  # a step inside a Pipeline, or a class-level call
        model = self._monitor_for(instance, wrapped.__name__)
        token = _INSIDE.set(True)
        try:
            if model is None:
                return wrapped(*args, **kwargs)
            return model(wrapped)(*args, **kwargs)
        finally:
            _INSIDE.reset(token)

    def _monitor_for(self, estimator: Any, operation: str) -> monitor | None:
        try:
            by_operation = self._monitors.setdefault(estimator, {})
        except TypeError:  # not weak-referenceable: build a monitor each time
            by_operation = {}
        found = by_operation.get(operation)
        if found is not None:
            return found
        try:
            found = monitor(
                getattr(estimator, "segwatch_model_name", None) or type(estimator).__name__,
                version=getattr(estimator, "segwatch_model_version", None)
                or model_version(estimator),
                operation=operation,
                feature_names=_feature_names(estimator),
                classes=_classes(estimator),
                record_outputs=operation not in _OUTPUTLESS,
                tracer_provider=self._tracer_provider,
            )
        except Exception as exc:
            _logger.warning("segwatch: cannot monitor %s: %s", type(estimator).__name__, exc)
            return None
        by_operation[operation] = found
        return found


def _quiet(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """Run a training method with the model calls it makes inside left unrecorded."""
    token = _INSIDE.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _INSIDE.reset(token)


def _feature_names(estimator: Any) -> list[str] | None:
    names = _safe_attribute(estimator, "feature_names_in_")
    if names is not None:
        return [str(n) for n in names]
    width = _safe_attribute(estimator, "n_features_in_")
    return [f"x{i}" for i in range(int(width))] if isinstance(width, int) else None


def _classes(estimator: Any) -> list[Any] | None:
    classes = _safe_attribute(estimator, "classes_")
    if classes is None:
        return None
    return list(classes.tolist()) if hasattr(classes, "tolist") else list(classes)


def _safe_attribute(estimator: Any, name: str) -> Any:
    try:
        return getattr(estimator, name, None)
    except Exception:  # properties of unfitted estimators and pipelines may raise
        return None
