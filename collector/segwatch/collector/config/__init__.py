"""The config language (placeholder, rewritten below)."""

from .endpoints import is_loopback, is_wildcard, parse_endpoint
from .model import *  # noqa: F403
from .model import __all__ as _model_names

__all__ = [*_model_names, "is_loopback", "is_wildcard", "parse_endpoint"]
