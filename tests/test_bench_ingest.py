"""bench/ingest.py runs both paths end to end on a tiny load: the embedded store, and a
collector writing over ClickHouse's HTTP interface to a ``segwatch serve`` it starts or to
a server named with ``--dsn``. Figures are not checked (timing is the bench's business,
not the suite's): only that each path ran, stored every call and printed its lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import clickhouse_connect

from segwatch.collector.service.serving import StoreServer

BENCH = Path(__file__).resolve().parent.parent / "bench" / "ingest.py"
TINY = ["--requests", "3", "--spans-per-request", "50"]
NUMBER = r"([\d,.]+)"


def _run(*arguments: str) -> str:
    """The bench's output; it fails (non-zero) if a path stored other than every call."""
    result = subprocess.run([sys.executable, str(BENCH), *TINY, *arguments],
                            capture_output=True, text=True, timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _rate(output: str, label: str) -> float:
    found = re.search(rf"^segwatch, {re.escape(label)} +{NUMBER} spans/s end to end$", output,
                      re.MULTILINE)  # fmt: skip
    assert found, output
    return float(found[1].replace(",", ""))


def _process_cores(output: str, name: str) -> list[float]:
    """The cores each path's ``name`` process kept busy, in the order printed."""
    return [float(cores) for cores in
            re.findall(rf"^  {name} +{NUMBER} cores busy, ", output, re.MULTILINE)]  # fmt: skip


def test_the_embedded_and_the_served_http_paths_each_print_their_rate_and_processes() -> None:
    output = _run()
    assert _rate(output, "embedded store") > 0
    assert _rate(output, "HTTP to segwatch serve") > 0
    assert len(_process_cores(output, "collector")) == 2  # one per path
    assert len(_process_cores(output, "serve")) == 1  # the HTTP path's engine
    segments = re.findall(r"; (\d+) active segments$", output, re.MULTILINE)
    assert len(segments) == 2 and segments[0] == segments[1] != "0"  # same calls, same segments
    ratio = re.search(rf"^ratio HTTP / embedded: {NUMBER} end to end, {NUMBER} per CPU-second$",
                      output, re.MULTILINE)  # fmt: skip
    assert ratio, output
    assert float(ratio[1]) > 0 and float(ratio[2]) > 0
    # The embedded path against issue 18's three targets, each said met or not.
    assert "issue 18 targets (embedded):" in output
    verdicts = re.findall(r"^  (spans per CPU-second|per CPU-second / attribute pass|RSS growth)"
                          r" .* target .* (met|NOT met)$", output, re.MULTILINE)  # fmt: skip
    assert [name for name, _ in verdicts] == [
        "spans per CPU-second", "per CPU-second / attribute pass", "RSS growth",
    ], output  # fmt: skip
    # Then the raw-call insert three ways, each stored the same rows.
    for path in ("segwatch Native", "clickhouse-connect insert", "clickhouse-connect Arrow"):
        assert re.search(rf"^  {path} +build +{NUMBER} \+ insert +{NUMBER} = +{NUMBER}$",
                         output, re.MULTILINE), output  # fmt: skip
    assert "every path stored the same rows: yes" in output


def test_dsn_sends_the_http_path_to_that_server_under_a_model_name_of_its_own(
    store_server: StoreServer,
) -> None:
    output = _run("--dsn", f"{store_server.url}/segwatch", "--no-encoders")
    assert _rate(output, f"HTTP to {store_server.url}/segwatch") > 0
    assert _process_cores(output, "serve") == []  # not a process of the run: not counted
    reader = clickhouse_connect.get_client(host="127.0.0.1", port=store_server.door.port,  # type: ignore[union-attr]
                                           database="segwatch")  # fmt: skip
    try:
        calls = reader.query(
            "SELECT model_name, count() FROM ml_model_calls GROUP BY model_name"
        ).result_rows
    finally:
        reader.close()
    assert len(calls) == 1 and calls[0][0].startswith("fraud_")
    assert calls[0][1] == 4 * 50  # the warm-up request and the three timed ones
