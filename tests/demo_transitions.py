"""Anomaly transitions for a copy of the demo's store (tests/conftest.py's ``demo_store``).

The demo's own runs open its anomalies or not depending on how many windows found them;
tests that need one anomaly open and one resolved write these transitions into a copy
(``client.command(BR_DRIFT_TRANSITIONS)``), never into the shared store.
"""

from __future__ import annotations

__all__ = ["BR_DRIFT_TRANSITIONS"]

BR_DRIFT_TRANSITIONS = """
INSERT INTO ml_anomaly_events
SELECT now64(3), if(quantity = 'feature.amount', 'open', 'resolved'), detector, model_name,
       model_version, model_stage, segment_dim, segment_value, quantity,
       window_start + INTERVAL 1 HOUR, window_end + INTERVAL 1 HOUR, score, threshold, p_value,
       support, exemplar_trace_ids, details, statistics
FROM ml_anomalies FINAL
WHERE detector = 'psi_drift' AND segment_value = 'BR'
"""
"""The demo's psi_drift findings for fraud / feature.country=BR as transitions an hour after
any window (so they are the latest, whatever the demo's runs recorded): the drift in
``feature.amount`` open, the drift in ``output.score`` resolved."""
