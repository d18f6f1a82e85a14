"""The config language (placeholder, rewritten below)."""

from .model import *  # noqa: F403
from .model import __all__ as __all__
