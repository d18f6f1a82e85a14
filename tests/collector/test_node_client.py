"""A second, independent client: the OTel Node SDK sends the same calls as Python.

Runs when ``node`` and the client's packages are present (``.ci/run`` installs
them with ``npm ci`` in ``clients/node``); otherwise it is skipped and says why.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from waiting import wait_until

from segwatch.collector.cli.demo import service_tracer_provider
from segwatch.instrumentation import monitor

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
# Recent and on the hour: the collector refuses spans older than its lateness or from the future.
START_NS = (int(time.time()) // 3600 * 3600 - 3 * 3600) * 10**9

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (CLIENT / "node_modules").is_dir(),
    reason="needs node and `npm ci` in clients/node (.ci/run does both)",
)


def _calls(n: int) -> list[dict]:
    rng = random.Random(9)
    return [
        {
            "start_ns": START_NS + i * 250_000_000,  # four calls a second
            "features": {
                "amount": round(rng.lognormvariate(3, 1), 2),
                "country": rng.choice(["BR", "US", "DE"]),
                "items": rng.randint(0, 9),
                "returning": rng.random() < 0.5,
                "note": None if rng.random() < 0.2 else "ok",
            },
            "outputs": {"score": round(rng.random(), 4)},
            "metrics": {"confidence": round(rng.random(), 4)},
        }
        for i in range(n)
    ]


def _aggregates(client, version: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    return client.query(
        "SELECT bucket_start, segment_dim, segment_value, quantity, sum(count), sum(missing), "
        "sum(numeric_count), round(sum(sum), 6), round(sum(sum_sq), 6), min(min), max(max), "
        "sumMap(histogram), sumMap(categories) FROM ml_segment_aggregates "
        "WHERE model_version = {v:String} GROUP BY ALL ORDER BY ALL",
        parameters={"v": version},
    ).result_rows


def test_node_sdk_and_python_sdk_give_the_same_aggregates(collector, tmp_path: Path) -> None:
    calls = _calls(400)
    provider = service_tracer_provider(collector.receiver.address, "python-check")
    model = monitor("shop", version="python", tracer_provider=provider)
    for call in calls:
        with model.call(start_time=call["start_ns"], end_time=call["start_ns"] + 1_000_000) as c:
            c.features(**call["features"])
            c.outputs(**call["outputs"])
            c.metric("confidence", call["metrics"]["confidence"])
    provider.shutdown()
    payload = {"model": "shop", "version": "node",
               "calls": [{**c, "start_ns": str(c["start_ns"])} for c in calls]}  # fmt: skip
    (tmp_path / "calls.json").write_text(json.dumps(payload))
    result = subprocess.run(
        ["node", str(CLIENT / "send.js"), str(tmp_path / "calls.json")],
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector.receiver.address}"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stats = collector.processor.stats
    wait_until(lambda: stats.model_calls >= 2 * len(calls))
    collector.flush()
    client = collector._clients.api
    python_rows, node_rows = _aggregates(client, "python"), _aggregates(client, "node")
    assert len(python_rows) > 100
    assert node_rows == python_rows
