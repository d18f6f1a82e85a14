"""report: the page people look at — ``segwatch report`` and the local API's ``GET /report``.

What enters: a :class:`ReportRequest` (a model or every model, a period) and a
:data:`ReportQuery` that runs the report's read-only SQL (this folder's
``.sql`` files) on a store: a client this process opened, or the collector's
own. What leaves: one self-contained HTML page (plotly.js embedded once, no
network), per model the open and recent anomalies and the latest findings with
their sentences and exemplar trace ids, a segment × quantity heat map of drift
(PSI, every segment of every dimension), each finding's distribution against its
baseline and its time series, volume per segment and, with labels, performance.

Threads: the caller's (the CLI's main thread, or an API request thread holding
the API's client); nothing here starts a thread or keeps state between calls.
Plotly is the optional extra ``segwatch[report]``, imported only when a page is
made (:class:`PlotlyMissingError` otherwise).

- ``request``: what a report covers; psi_drift's windows as configured.
- ``reads``: the SQL files, query parameters and the read budget.
- ``data``: the reads, into plain dataclasses; ``focus``: which findings are drawn
  up close, and their distribution and time series.
- ``distributions``: histograms rebuilt from the stored log buckets, for plots.
- ``figures``, ``heatmap``: the Plotly figures. ``page``, ``page_style``: the HTML.
- ``build``: ``build_report_page()``, from a store to the page. A caller that
  holds a lock while it reads (the API) calls ``read_report()`` under it and
  ``render_page()`` after.
"""

from __future__ import annotations

from .build import build_report_page
from .data import Report, UnknownModelError, read_report
from .figures import PlotlyMissingError, require_plotly
from .page import render_page
from .reads import ReadBudget, ReportBudgetError, ReportQuery, client_query
from .request import DriftSettings, ReportRequest

__all__ = [
    "DriftSettings",
    "PlotlyMissingError",
    "ReadBudget",
    "Report",
    "ReportBudgetError",
    "ReportQuery",
    "ReportRequest",
    "UnknownModelError",
    "build_report_page",
    "client_query",
    "read_report",
    "render_page",
    "require_plotly",
]
