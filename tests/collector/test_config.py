"""The configuration language: the documented examples, a file full of mistakes, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import segwatch.collector.config as config_package
from segwatch.collector.config import (
    CollectorConfig,
    ConfigError,
    configured_detectors,
    parse_config,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"
EXAMPLES = re.findall(r"## Worked example: .*?```yaml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
SEGWATCH = [sys.executable, "-m", "segwatch.collector.cli"]

MISTAKES = """\
storage:
  dsn: chdb://./data
recevier:
  grpc: {endpoint: 127.0.0.1:4317}
segments:
  top_k: 0
  crosses:
    - [country, planet]
models:
  fraud:
    features:
      amount: {type: number, segments: {edges: [0, 100, 50]}}
      country: {type: category, segments: {log: {base: 10}}}
      age: {segments: {linear: {origin: 0}}}
      device: {segments: {tpo: 5}}
    crosses: [[country, device], [country, country]]
    baseline: lastweek
    featurs: {}
baselines:
  v2: {kind: version}
expected_biases:
  - {model: fraud, dimension: planet}
  - {model: nope, dimension: country}
detectors:
  psi_drfit: {threshold: 0.3}
alerts:
  webhooks: [{url: "ftp://x"}]
"""

EXPECTED_PROBLEMS = [
    "recevier (line 3): unknown key; did you mean 'receiver'?",
    "segments.top_k (line 6): must be between 1 and 10000",
    "segments.crosses[0] (line 8): 'planet' is not a declared feature or context",
    "models.fraud.features.amount.segments.edges (line 12): edges must be strictly increasing",
    "models.fraud.features.country.segments.log (line 13): log buckets need type: number",
    "models.fraud.features.age.segments.linear (line 14): linear buckets need a width",
    "models.fraud.features.device.segments.tpo (line 15): unknown kind; did you mean 'top'?",
    "models.fraud.crosses[1] (line 16): a cross needs two different fields",
    "models.fraud.baseline (line 17): no baseline named 'lastweek'",
    "models.fraud.featurs (line 18): unknown key; did you mean 'features'?",
    "baselines.v2.kind (line 20): kind 'version' is no longer a baseline kind: version_drift",
    "expected_biases[0].dimension (line 22): 'planet' is not a feature or context",
    "expected_biases[1].model (line 23): no model named 'nope'",
    "detectors.psi_drfit (line 25): no detector named 'psi_drfit'; did you mean 'psi_drift'?",
    "alerts.webhooks[0].url (line 27): 'ftp://x' must be an http(s):// URL",
]


@pytest.mark.parametrize("text", EXAMPLES, ids=["text_pipeline", "fraud"])
def test_documented_examples_are_valid(text: str) -> None:
    config = parse_config(text)
    assert config.models


def test_every_mistake_is_reported_once_with_path_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MISTAKES, source="mistakes.yaml")
    problems = info.value.problems
    for expected in EXPECTED_PROBLEMS:
        assert sum(p.startswith(expected) for p in problems) == 1, (expected, problems)
    assert len(problems) == len(EXPECTED_PROBLEMS)


def test_a_detector_parameter_needs_a_value() -> None:
    # A name with nothing under it means "all defaults" for a record, not for a value.
    with pytest.raises(ConfigError, match=r"parameters.threshold \(line 2\): must be an integer"):
        parse_config("detectors:\n  volume: {parameters: {threshold: }}\n")


PUBLIC_NAMES = {
    "API_TOKEN_ENV", "DEFAULT_API_ENDPOINT", "DEFAULT_GRPC_ENDPOINT", "RECEIVER_TOKEN_ENV",
    "AlertsConfig", "ApiConfig", "BaselineConfig", "CollectorConfig", "ConfigError",
    "DetectorConfig", "ExpectedBias", "FieldConfig", "LabelConfig", "ModelConfig",
    "ReceiverConfig", "SchedulerConfig", "SegmentSpec", "SegmentsConfig", "SpoolConfig",
    "StorageConfig", "TlsConfig", "WebhookConfig", "configured_detectors",
    "expected_biases_parameter", "labels_parameter", "load_config", "parse_config",
    "is_loopback", "is_wildcard", "parse_endpoint",
}  # fmt: skip
"""What ``segwatch.collector.config`` exported before it was split by section, plus the
endpoint helpers that moved into it from ``service/api_door``."""


def test_the_package_exports_its_public_names() -> None:
    assert set(config_package.__all__) >= PUBLIC_NAMES
    assert all(getattr(config_package, n, None) is not None for n in config_package.__all__)


def test_zero_config_is_the_defaults() -> None:
    assert parse_config("") == CollectorConfig()
    assert parse_config("# nothing but a comment\n") == CollectorConfig()


def test_detector_overrides_and_minimum_segment_size() -> None:
    config = parse_config(EXAMPLES[1])  # fraud: min_segment_size 500, psi_drift overridden
    psi = next(d for d in configured_detectors(config) if d.name == "psi_drift")
    assert (psi.cadence, psi.window, psi.baseline) == (300, 900, 7200)
    assert psi.parameters["min_support"] == 500 and psi.parameters["threshold"] == 0.2
    disabled = parse_config("detectors:\n  psi_drift: {enabled: false}\n")
    names = [d.name for d in configured_detectors(disabled)]
    assert "psi_drift" not in names and "psi_drift_training" in names


def test_detector_durations_are_whole_five_minutes() -> None:
    # The detectors read 5-minute roll-ups: a 7-minute window cannot be read from them.
    with pytest.raises(ConfigError, match="not a whole number of 5 minutes"):
        parse_config("detectors:\n  psi_drift: {window: 7m}\n")
    assert (
        parse_config("detectors:\n  psi_drift: {window: 30m}\n").detectors["psi_drift"].window
        == 1800
    )


def test_the_false_discovery_rate_is_a_probability() -> None:
    with pytest.raises(ConfigError, match="must lie between 0 and 1, not 1"):
        parse_config("detectors:\n  volume: {parameters: {fdr: 1}}\n")


def test_persistence_can_be_overridden() -> None:
    config = parse_config("detectors:\n  volume: {persistence: {found: 3, windows: 4}}\n")
    volume = next(d for d in configured_detectors(config) if d.name == "volume")
    assert (volume.persistence.found, volume.persistence.windows) == (3, 4)
    with pytest.raises(ConfigError, match=r"found \(5\) cannot exceed windows \(2\)"):
        parse_config("detectors:\n  volume: {persistence: {found: 5, windows: 2}}\n")


def test_labels_reach_the_performance_detector() -> None:
    override = "detectors:\n  performance: {delay: 2d, threshold: 0.03}\n"
    text = EXAMPLES[1].replace("detectors:\n", override)
    config = parse_config(text)
    performance = next(d for d in configured_detectors(config) if d.name == "performance")
    assert performance.delay == 2 * 86400 and performance.parameters["threshold"] == 0.03
    assert performance.parameters["labels"] == (
        "fraud\tlabel.is_fraud\tclassification\toutput.decision\toutput.score\tfraud\t0.5"
    )
    with pytest.raises(ConfigError, match="'scor' is not an output of model 'fraud'"):
        parse_config(text.replace("score: score, positive", "score: scor, positive"))
    with pytest.raises(ConfigError, match="a regression label needs prediction"):
        parse_config("models:\n  eta:\n    labels:\n      minutes: {kind: regression}\n")


SENSITIVE = """\
contexts:
  gender: {type: category, sensitive: true}
  language: {type: category}
models:
  loans:
    features:
      age_band: {type: category, sensitive: true}
      income: {type: number}
    contexts: [gender, language]
  chat:
    features:
      region: {type: category, sensitive: true}
"""


def test_sensitive_fields_reach_the_bias_detector() -> None:
    """A sensitive context counts in every model (any model's calls may carry it); a
    feature in its own model. As a query parameter, never formatted into the SQL."""
    bias = next(d for d in configured_detectors(parse_config(SENSITIVE)) if d.name == "bias")
    assert bias.parameters["sensitive_dimensions"] == (
        "\tcontext.gender\nchat\tfeature.region\nloans\tfeature.age_band"
    )
    assert "{sensitive_dimensions:String}" in bias.sql
    plain = next(d for d in configured_detectors(parse_config("")) if d.name == "bias")
    assert plain.parameters["sensitive_dimensions"] == ""


def test_only_segment_dimensions_can_be_sensitive() -> None:
    text = """\
models:
  loans:
    features:
      user_id: {type: category, segment: false, sensitive: true}
    outputs:
      score: {type: number, sensitive: true}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.problems == [
        "models.loans.outputs.score.sensitive (line 6): only features and contexts can be "
        "sensitive: they are the dimensions that split traffic",
        "models.loans.features.user_id.sensitive (line 4): a sensitive field must be a segment "
        "dimension, not segment: false (its segments are what bias compares)",
    ]


def test_validate_command(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(EXAMPLES[0])
    bad.write_text(MISTAKES)
    ok = subprocess.run([*SEGWATCH, "validate", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "valid (3 models" in ok.stdout
    refused = subprocess.run([*SEGWATCH, "validate", str(bad)], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "15 problem(s)" in refused.stderr and "line 27" in refused.stderr
    as_json = subprocess.run([*SEGWATCH, "validate", str(bad), "--json"], capture_output=True,
                             text=True)  # fmt: skip
    assert as_json.returncode == 2 and len(json.loads(as_json.stdout)["problems"]) == 15


def test_explain_command(tmp_path: Path) -> None:
    path = tmp_path / "fraud.yaml"
    path.write_text(EXAMPLES[1])
    result = subprocess.run([*SEGWATCH, "explain", str(path), "--json"], capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {(r[0], r[1]): r for r in report["models"]["rows"]}
    assert rows[("fraud", "feature.account_age_days")][2] == 6  # 5 edge buckets + MISSING
    assert rows[("fraud", "feature.country")][2] == 42  # top 40 + MISSING + __other__
    assert ("fraud", "feature.user_id") not in rows  # segment: false
    assert rows[("fraud", "country×device")][2] == 42 * 27
    # country is sensitive: its dimension and the crosses including it are marked
    assert report["models"]["columns"][5] == "sensitive"
    assert rows[("fraud", "feature.country")][5] == "yes"
    assert rows[("fraud", "country×device")][5] == rows[("fraud", "amount×country")][5] == "yes"
    assert rows[("fraud", "feature.device")][5] == rows[("fraud", "(all)")][5] == ""
    total = rows[("fraud", "(all)")]
    assert total[3] == 9 and total[4] > 0  # quantities, aggregate rows per hour
    detector = report["detectors"]["rows"][0]
    assert detector[:4] == ["psi_drift", "5m", "15m", "120m"]
    # fraud's baseline names profile fraud_training, of version 2.3, for every version.
    assert report["baselines"]["rows"] == [
        ["fraud", "champion", "fraud_training", "the one of version 2.3, for every live version"]
    ]
