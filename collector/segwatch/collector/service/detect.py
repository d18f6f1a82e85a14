"""Running the detectors now, on demand: ``segwatch detect``, the API's ``/detect``, the demo.

Light on purpose (the engine's runner and a result table, nothing of the
collector's pipeline): every CLI command imports it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.detection import DetectorSpec, run_detectors
from segwatch.clickhouse.queries import QueryResult

__all__ = ["detect_table"]


def detect_table(
    client: Client, at: dt.datetime | None, specs: list[DetectorSpec] | None = None
) -> QueryResult:
    """Run the detectors (``specs``, default the manifest's) now; tabulate the new anomalies."""
    runs = run_detectors(client, at, specs)
    rows: list[list[Any]] = []
    for run in runs:
        for a in run.new_anomalies:
            rows.append(
                [
                    run.detector,
                    a["model_name"],
                    a["model_version"],
                    f"{a['segment_dim']}={a['segment_value']}",
                    a["quantity"],
                    round(float(a["score"]), 4),
                    a["threshold"],
                    a["support"],
                    (a["exemplar_trace_ids"] or [""])[0],
                ]
            )
    columns = [
        "detector",
        "model",
        "version",
        "segment",
        "quantity",
        "score",
        "threshold",
        "support",
        "exemplar_trace_id",
    ]
    return QueryResult(columns, rows)
