"""Hostile text is data, never SQL: attribute keys and values, config identifiers, analysts' SQL.

Values travel to ClickHouse in Native blocks (never spliced into SQL text);
the detectors read them back through query parameters. These tests send the
nastiest strings through the real path (SDK spans → receiver → store) and
read them back unchanged; config names are held to a strict pattern; the
read-only SQL endpoint refuses every kind of write.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from segwatch.collector.config import ConfigError, parse_config
from segwatch.collector.service.collector import Collector

HOSTILE = [
    "'); DROP TABLE ml_model_calls; --",
    '" OR 1=1 --',
    "\\'; SELECT * FROM system.users; --",
    "nul\x00byte",
    "bell\x07 escape\x1b[31m red\r\nnew line\ttab",
    "{x:String} {{y}} %s ? $1",  # placeholders of every SQL parameter syntax
    "\u202etxet desrever\u200b zero width",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀🧠" * 2000,  # ~60 KB of 4-byte characters
]


def _sql(collector: Collector, query: str) -> tuple[int, Any]:
    assert collector.api is not None
    request = urllib.request.Request(
        f"{collector.api.url}/api/v1/sql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {collector.api.token}"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_hostile_keys_and_values_are_stored_as_data(collector: Collector, recorder: Any) -> None:
    # Plain SDK spans (the decorator would leave out a 60 KB value: it keeps spans small).
    tracer = recorder.provider.get_tracer("test")
    for value in HOSTILE:
        for _ in range(3):
            with tracer.start_as_current_span("predict fraud") as span:
                span.set_attribute("ml.model.name", "fraud")
                span.set_attribute("ml.feature.note", value)
                span.set_attribute("ml.feature.amount", 1.0)
                span.set_attribute("ml.feature.x'); DROP TABLE ml_segment_aggregates; --", 2.0)
    exporter = OTLPSpanExporter(endpoint=collector.receiver.address, insecure=True)  # type: ignore[union-attr]
    assert exporter.export(recorder.spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()
    collector.flush()

    code, calls = _sql(collector, "SELECT count() FROM ml_model_calls")
    assert code == 200 and calls["rows"] == [[3 * len(HOSTILE)]]
    code, found = _sql(
        collector,
        "SELECT segment_value, toUInt64(sum(count)) FROM ml_segment_aggregates "
        "WHERE segment_dim = 'feature.note' AND quantity = 'feature.amount' "
        "GROUP BY segment_value",
    )
    assert code == 200
    assert {value: n for value, n in found["rows"]} == {value: 3 for value in HOSTILE}
    code, keys = _sql(
        collector,
        "SELECT DISTINCT quantity FROM ml_segment_aggregates WHERE quantity LIKE 'feature.x%'",
    )
    assert keys["rows"] == [["feature.x'); DROP TABLE ml_segment_aggregates; --"]]
    code, tables = _sql(collector, "SELECT count() FROM system.tables WHERE name LIKE 'ml_%'")
    assert tables["rows"][0][0] >= 5  # every table is still there


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO ml_anomalies (detector) VALUES ('x')",
        "DROP TABLE ml_model_calls",
        "CREATE TABLE evil (x UInt8) ENGINE = Memory",
        "ALTER TABLE ml_model_calls DELETE WHERE 1",
        "TRUNCATE TABLE ml_model_calls",
        "SELECT 1; DROP TABLE ml_model_calls",
        "SELECT 1 SETTINGS readonly = 0",
        "SET readonly = 0",
    ],
)
def test_the_sql_endpoint_refuses_writes_and_ddl(collector: Collector, query: str) -> None:
    code, answer = _sql(collector, query)
    assert code == 400, answer
    code, tables = _sql(
        collector, "SELECT name FROM system.tables WHERE database = currentDatabase()"
    )
    names = {row[0] for row in tables["rows"]}
    assert "ml_model_calls" in names and "evil" not in names
    code, anomalies = _sql(collector, "SELECT count() FROM ml_anomalies")
    assert anomalies["rows"] == [[0]]


@pytest.mark.parametrize(
    ("yaml_text", "path"),
    [
        ("models:\n  \"fraud'; DROP TABLE x; --\": {}\n", "models"),
        ("models:\n  fraud:\n    features:\n      \"a b\": {type: number}\n",
         "models.fraud.features"),
        ("contexts:\n  \"lang\\u0000\": {type: category}\n", "contexts"),
        ("detectors:\n  psi_drift:\n    parameters:\n      \"x}; DROP\": 1\n",
         "detectors.psi_drift.parameters"),
        ("receiver:\n  grpc:\n    token_env: \"A=B; rm -rf\"\n", "receiver.grpc.token_env"),
    ],
)  # fmt: skip
def test_config_identifiers_must_match_a_strict_pattern(yaml_text: str, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml_text)
    assert path in str(caught.value)
