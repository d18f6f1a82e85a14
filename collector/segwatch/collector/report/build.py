"""One call from a store to the report's HTML: read, draw, write the page."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

from segwatch.clickhouse.detection import DetectorSpec

from .data import read_report
from .figures import require_plotly
from .page import render_page
from .reads import ReportQuery
from .request import DriftSettings, ReportRequest

__all__ = ["build_report_page"]


def build_report_page(
    query: ReportQuery,
    request: ReportRequest,
    detectors: Sequence[DetectorSpec] | None = None,
    labels: str = "",
    store: str = "",
    lock: AbstractContextManager[object] | None = None,
) -> str:
    """The report page of ``request``, read through ``query``.

    ``detectors``: the configured detectors (the heat map scores with
    psi_drift's window, baseline and thresholds; the manifest's when None);
    ``labels``: the config's label lines (``labels_parameter``); ``store``: how
    the page names the store; ``lock``: held while the store is read (the API's,
    which its other requests take), released before the page is drawn, which
    takes longer. Raises :class:`PlotlyMissingError` first when plotly is not
    installed, :class:`UnknownModelError` for a model the store does not have.
    """
    require_plotly()
    with lock if lock is not None else nullcontext():
        report = read_report(query, request, DriftSettings.of(detectors), labels, store)
    return render_page(report)
