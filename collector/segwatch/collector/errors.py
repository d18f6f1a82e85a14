"""The two kinds of pipeline error, as in the OTel Collector.

A :class:`PermanentError` means the data is bad: retrying cannot help
(gRPC ``INVALID_ARGUMENT``). A :class:`RetryableError` means the pipeline could
not take the data now, e.g. the store is down (gRPC ``UNAVAILABLE``): the
client should send it again later.
"""

from __future__ import annotations

__all__ = ["PermanentError", "RetryableError"]


class PermanentError(ValueError):
    """Bad data; retrying the same request cannot succeed."""


class RetryableError(RuntimeError):
    """The data could not be taken now; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
