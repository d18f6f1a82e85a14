"""``segwatch report``: the store's report page, written to one self-contained HTML file.

On a store this process opens (or one ``segwatch serve`` holds, through its
door) the report is read and drawn here. While a collector holds the embedded
store, its ``GET /report`` makes the same page from the collector's own client
and this command saves it. Plotly is the optional extra ``segwatch[report]``:
without it the command fails first, with one line saying what to install.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from urllib.parse import urlencode

from segwatch.clickhouse.store import parse_dsn
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.detector_specs import configured_detectors, labels_parameter
from segwatch.collector.report import ReportRequest, build_report_page, client_query
from segwatch.collector.report.figures import require_plotly
from segwatch.collector.report.request import MAX_SINCE
from segwatch.collector.service.discovery import read_discovery

from .access import ApiAccess, ApiError, DirectAccess, StoreAccess

__all__ = ["check_output", "check_report_extra", "report_page", "report_request", "write_page"]


def check_report_extra() -> None:
    """Raise :class:`~segwatch.collector.report.PlotlyMissingError` (an ``ImportError``
    whose message says ``pip install "segwatch[report]"``) when plotly is missing."""
    require_plotly()


def report_request(model: str | None, since: int) -> ReportRequest:
    """The request ``--model`` and ``--since`` ask for. Raises ``ValueError`` naming the
    option as the command spells it (``--since``, not the API's ``since``): bad usage,
    which the command answers with exit 2 before it opens anything."""
    if since > MAX_SINCE:
        raise ValueError(
            f"--since must be at most {MAX_SINCE // 86400}d: a report reads every minute "
            "of its period"
        )
    return ReportRequest(model=model, since=since)


def report_page(access: StoreAccess, config: CollectorConfig, request: ReportRequest) -> str:
    """The page, made here on a store this process reaches, or by the running collector."""
    if isinstance(access, ApiAccess):
        return _through_collector(access, config, request)
    assert isinstance(access, DirectAccess)
    return build_report_page(
        client_query(access.client),
        request,
        detectors=configured_detectors(config),
        labels=labels_parameter(config),
        store=access.store,
    )


def _through_collector(access: ApiAccess, config: CollectorConfig, request: ReportRequest) -> str:
    """``GET /report`` of the collector that holds the store (its token as the CLI's other
    commands send it: from the discovery file, else the environment)."""
    info = read_discovery(parse_dsn(config.storage.dsn)) or {}
    token = info.get("token") or os.environ.get(config.api.token_env, "")
    query = {"since": f"{request.since}s", **({"model": request.model} if request.model else {})}
    call = urllib.request.Request(
        f"{access.base_url}/report?{urlencode(query)}",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(call, timeout=access.timeout) as response:
            return str(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            message = str(exc)
        raise ApiError(f"the collector's /report: {message}") from exc


def check_output(path: str) -> None:
    """Raise ``OSError`` naming ``path`` when the page could not be written there: ``path``
    a directory, its directory missing or not writable. Checked before the page is made,
    which takes a while."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write the report to {path}: it is a directory")
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"cannot write the report to {path}: the directory {directory} does not exist"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot write the report to {path}: the directory {directory} is not writable"
        )


def write_page(page: str, path: str) -> None:
    """Write ``page`` to ``path`` whole or not at all (a temporary file beside it, then
    renamed). A failure leaves no temporary file and raises ``OSError`` naming ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = ""
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=directory, prefix=".segwatch-report-", delete=False
        ) as handle:
            temporary = handle.name
            handle.write(page)
        umask = os.umask(0)  # a file as open() would make it (the temporary one is 0600)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except OSError as exc:
        if temporary and os.path.exists(temporary):
            os.unlink(temporary)
        reason = exc.strerror or str(exc)
        raise OSError(f"cannot write the report to {path}: {reason}") from exc
