"""RequestLimits, the ``receiver.limits`` section: how much one OTLP request and one span may carry.

The receiver refuses a message over ``max_message_mib`` (gRPC answers
``RESOURCE_EXHAUSTED`` before anything is decoded) and a request of more than
``max_spans_per_request`` spans (``INVALID_ARGUMENT``); a batch span whose
rows would take the request's model calls past that same number is rejected.
A model-call span with more than ``max_attributes_per_span`` attributes, or
one attribute (key and value, as serialized) over ``max_attribute_bytes``, or
starting after ``newest_ns`` (set per request from the allowed clock skew),
is rejected on its own and counted in the OTLP partial-success answer. Both
readers in ``decode/`` (the numpy fast reader and the reference reader) apply
the same checks with the same messages. The spool keeps the limits a request
was accepted under, so its replay rejects exactly the same spans. 0 means no
limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from segwatch.collector.errors import PermanentError

__all__ = ["NO_LIMITS", "RequestLimits"]


@dataclass(frozen=True)
class RequestLimits:
    """The limits one request is read under; immutable, shared by the receiver's threads."""

    max_message_mib: int = 64
    max_spans_per_request: int = 100_000
    max_attributes_per_span: int = 1_000
    max_attribute_bytes: int = 256 * 1024  # a batch span's column of 10,000 doubles is ~90 KiB
    # Not configured here: the processor sets it for each request from receiver.allowed_skew.
    newest_ns: int = 0  # a span starting after it is rejected (its clock is ahead)

    def check_span_count(self, spans: int) -> None:
        """Refuse a request of too many spans (:class:`PermanentError`)."""
        if self.max_spans_per_request and spans > self.max_spans_per_request:
            raise PermanentError(
                f"the request has {spans} spans, over the limit of {self.max_spans_per_request} "
                "(receiver.limits.max_spans_per_request): send smaller batches"
            )

    def span_problem(self, span_name: str, attributes: int, largest: int) -> str:
        """Why a span is over the limits (its attribute count, its largest attribute), or ``""``."""
        if self.max_attributes_per_span and attributes > self.max_attributes_per_span:
            return (
                f"span {span_name!r}: {attributes} attributes, over the limit of "
                f"{self.max_attributes_per_span} (receiver.limits.max_attributes_per_span)"
            )
        if self.max_attribute_bytes and largest > self.max_attribute_bytes:
            return (
                f"span {span_name!r}: an attribute of {largest} bytes, over the limit of "
                f"{self.max_attribute_bytes} (receiver.limits.max_attribute_bytes)"
            )
        return ""

    def spans_over(
        self, kv_span: npt.NDArray[np.int64], kv_bytes: npt.NDArray[np.int64], n_spans: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Per span: its attribute count, its largest attribute, and whether it is over a limit."""
        counts = np.bincount(kv_span, minlength=n_spans).astype(np.int64)
        largest = np.zeros(n_spans, dtype=np.int64)
        if len(kv_span):  # attributes come in span order: one reduceat, not the slow ufunc.at
            starts = np.flatnonzero(np.r_[True, kv_span[1:] != kv_span[:-1]])
            largest[kv_span[starts]] = np.maximum.reduceat(kv_bytes, starts)
        over = np.zeros(n_spans, dtype=bool)
        if self.max_attributes_per_span:
            over |= counts > self.max_attributes_per_span
        if self.max_attribute_bytes:
            over |= largest > self.max_attribute_bytes
        return counts, largest, over


NO_LIMITS = RequestLimits(0, 0, 0, 0, 0)
