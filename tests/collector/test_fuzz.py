"""Fuzz: generated OTLP payloads, many damaged, through decode → process → store.

Every payload is answered or refused as INVALID_ARGUMENT, never crashes the
pipeline; both decoders agree on every request the fast path reads; and the
store ends up with exactly the calls that were acknowledged (no lost row, no
invented one). The long run (100,000+ payloads) is ``bench/fuzz.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from otlp_fuzz import PipelineUnderFuzz, payloads


def test_generated_payloads_are_answered_or_refused_and_stored_exactly(
    client: Any, tmp_path: Path
) -> None:
    pipeline = PipelineUnderFuzz(client, tmp_path / "spool")

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(payloads)
    def feed(payload: bytes) -> None:
        pipeline.feed(payload)

    try:
        feed()
        pipeline.processor.flush(timeout=120)
    finally:
        pipeline.close()
    assert pipeline.payloads >= 1000
    assert pipeline.refused > 0 and pipeline.accepted > 0 and pipeline.rejected > 0
    stored = client.query("SELECT count() FROM ml_model_calls").result_rows[0][0]
    assert stored == pipeline.accepted
