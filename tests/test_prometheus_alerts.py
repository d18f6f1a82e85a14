"""examples/prometheus/alerts.yaml: rules promtool accepts, on metrics the collector exposes.

``promtool`` is Debian's ``prometheus`` package. Where it is missing the rules
are parsed and checked here instead, except in CI (``$CI`` set), where a
missing promtool fails the test: CI installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from segwatch.collector.metrics import CollectorMetrics

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "prometheus"
RULES = EXAMPLES / "alerts.yaml"
RULE_TESTS = EXAMPLES / "alerts.test.yaml"


def promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.environ.get("CI"):
        pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
    return found


def exposed_names() -> set[str]:
    """Every sample name a collector's ``/metrics`` serves (counters with ``_total``)."""
    metrics = CollectorMetrics()
    metrics.read_from(
        lambda: {
            "model_calls": 0, "rejected_spans": 0, "rejected_by": {"invalid": 1},
            "spool_bytes": 0, "pending_calls": 0, "spilled": 0, "dead_letters": 0,
            "dead_letter_calls": 0,
            "spans_lost": 0,
        }
    )  # fmt: skip
    metrics.open_anomalies.update({("fraud", "psi_drift", "feature.country"): 1})
    metrics.open_incidents.update({("fraud", "psi_drift"): 1})
    metrics.detector_failures.labels("psi_drift")
    metrics.requests.labels("traces", "OK")
    text = metrics.exposition().decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed here (Debian: apt-get install prometheus)")
    checked = subprocess.run(
        [tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout
    tested = subprocess.run(
        [tool, "test", "rules", RULE_TESTS.name],
        capture_output=True, text=True, timeout=60, cwd=EXAMPLES,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_rule_reads_metrics_the_collector_exposes() -> None:
    exposed = exposed_names()
    for rule in rules():
        named = set(re.findall(r"\bsegwatch_\w+", rule["expr"]))
        assert named, rule["alert"]
        assert named <= exposed, (rule["alert"], named - exposed)


def test_every_rule_has_a_severity_a_summary_and_a_description() -> None:
    found = rules()
    assert {r["alert"] for r in found} >= {"SegwatchIncidentOpen", "SegwatchCollectorSpilling"}
    for rule in found:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_the_incident_rule_takes_the_max_over_collectors_and_waits_five_minutes() -> None:
    """One alert per fault (an incident, not each of its anomalies). Every collector on a
    store reports the same store-wide count: ``sum`` would multiply it by the number of
    collectors."""
    (rule,) = [r for r in rules() if r["alert"] == "SegwatchIncidentOpen"]
    assert re.match(r"^max by \(model, root_detector\) \(segwatch_open_incidents\)", rule["expr"])
    assert not any("segwatch_open_anomalies" in r["expr"] for r in rules())
    assert rule["for"] == "5m"
    for label in ("model", "root_detector"):
        assert f"$labels.{label}" in rule["annotations"]["summary"]
