"""Anomalies a failed run left without an incident: found at the next run, joined, alerted.

A run records its anomalies' transitions (``ml_anomaly_events``) before their
incidents (``ml_incident_members``, :mod:`.incidents`). One that failed in
between (the store went away) left anomalies that are open with no incident,
and whose alert never went out; a rerun of the window does not open them
again. The next run of the same detectors finds them here (it gives them their
incidents, and returns their ``open`` transitions with its own), so the alert
goes out late rather than never.

Only anomalies that opened in an earlier window than the run's are taken: a
run of the same window elsewhere (``segwatch detect`` by hand beside the
scheduler) may still be between its events and its incidents, and is not
repaired from under it. A group of runs (:func:`~.detection.run_detector_group`)
joins its incidents once every run of the group has recorded its events, seconds
later (tens of seconds for a first run that rolls up hours of history); a replay
of the last two hours beside a live scheduler (``segwatch detect --from``) may then
see its anomalies repaired, and alerted, by the scheduler's next window first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from .incident_members import JOIN_WITHIN, MEMBERS_TABLE, IncidentMember
from .lifecycle import FINDING_COLUMNS, KEY_COLUMNS, opened_transition, sql_time, utc
from .store import DETECTOR_SETTINGS

__all__ = ["unjoined_opened"]

_KEYS = ", ".join(KEY_COLUMNS)
_UNJOINED = f"""
SELECT {", ".join(f"f.{c}" for c in FINDING_COLUMNS)}, o.opened_from, o.opened_at
FROM ml_anomalies AS f FINAL
INNER JOIN (
    -- open anomalies of the detectors with no incident member, opened within the limit
    SELECT {_KEYS}, max(window_end) AS opened_at,
           argMax(window_start, window_end) AS opened_from
    FROM ml_anomaly_events FINAL
    WHERE detector IN {{detectors:Array(String)}} AND window_end < {{end:DateTime('UTC')}}
      AND window_end >= {{end:DateTime('UTC')}} - toIntervalSecond({{within:UInt32}})
    GROUP BY {_KEYS}
    HAVING argMax(state, window_end) = 'open'
       AND ({_KEYS}, opened_at) NOT IN (
           SELECT {_KEYS}, anomaly_opened_at FROM {MEMBERS_TABLE} FINAL
           WHERE detector IN {{detectors:Array(String)}}
             AND anomaly_opened_at >= {{end:DateTime('UTC')}} - toIntervalSecond({{within:UInt32}}))
) AS o USING ({_KEYS})
-- the findings it opened with: k of the n windows before it opened
WHERE f.detector IN {{detectors:Array(String)}} AND f.window_end <= o.opened_at
  AND f.window_end >= {{end:DateTime('UTC')}}
                      - toIntervalSecond({{within:UInt32}} + {{lookback:UInt32}})
ORDER BY f.window_end
"""


def unjoined_opened(
    client: Client, detectors: Sequence[str], window_end: dt.datetime, lookback: dt.timedelta
) -> list[dict[str, Any]]:
    """The ``open`` transitions of the anomalies of ``detectors`` still open without an
    incident, for the run to give them theirs (:func:`~.incidents.join_incidents`).

    Each opened in a window ending in the :data:`JOIN_WITHIN` before ``window_end`` (not
    at it); its transition is rebuilt from its latest finding (``lookback``: how long
    before it opened a finding that opened it may be, the detector's persistence
    windows times its cadence). Read only: a run of several detectors reads them beside
    its queries, and joins every detector's incidents afterwards, one detector after
    another (:func:`~.detection.run_detector_group`).
    """
    if not detectors:
        return []
    parameters_sql = {
        "detectors": list(detectors),
        "end": sql_time(window_end),
        "within": int(JOIN_WITHIN.total_seconds()),
        "lookback": int(lookback.total_seconds()),
    }
    result = client.query(_UNJOINED, parameters=parameters_sql, settings=DETECTOR_SETTINGS)
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in result.result_rows:  # oldest first: each key's latest finding stays
        finding = dict(zip((*FINDING_COLUMNS, "opened_from", "opened_at"), row, strict=True))
        latest[IncidentMember.key_of(finding)] = finding
    return [
        opened_transition(
            {c: finding[c] for c in FINDING_COLUMNS},
            {"window_start": utc(finding["opened_from"]), "window_end": utc(finding["opened_at"])},
        )
        for finding in latest.values()
    ]
