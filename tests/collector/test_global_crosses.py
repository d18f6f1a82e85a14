"""Global crosses (``segments.crosses``): one rule for validate, explain and the collector.

A global cross applies in every model that has both of its fields: a declared model has
the features it declares and every context under ``contexts`` (listed by the model or
not: a context the model does not list is crossed in the calls that carry it), but those
with ``segment: false``; a model the config does not declare has what its calls carry.
``segwatch validate`` refuses a field crossed with itself and, when models are declared,
a field that no model has as a feature and ``contexts`` does not name; with no ``models``
it accepts any cross. ``segwatch explain`` shows where each applies and why it is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from waiting import wait_until

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.cli.demo import service_tracer_provider
from segwatch.collector.cli.main import main
from segwatch.collector.config import ConfigError, load_config, parse_config
from segwatch.collector.config.fields import global_cross_dimensions
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.collector.service.collector import Collector
from segwatch.instrumentation import context, monitor

TWO_MODELS = """\
contexts:
  language: {type: category}
segments:
  crosses:
    - [country, device]
    - [country, language]
    - [device, plan]
    - [country, user_id]
models:
  fraud:
    features:
      country: {type: category}
      device: {type: category}
  churn:
    features:
      country: {type: category}
      plan: {type: category}
      user_id: {segment: false}
    contexts: [language]
"""

CONTEXT_NOT_LISTED = """\
contexts:
  language: {}
segments:
  crosses: [[language, country]]
models:
  fraud:
    features:
      country: {type: category}
"""
"""Refused before this rule ("'language' is not a declared feature or context of any
model"), though the collector crossed it in fraud's calls carrying a language."""

NO_MODELS = "segments:\n  crosses: [[country, device]]\n"
"""Zero config but for a cross: models are learned from traffic. Refused before this rule."""


def test_a_declared_model_crosses_its_features_and_the_contexts() -> None:
    config = parse_config(TWO_MODELS)
    fraud, churn = config.models["fraud"], config.models["churn"]

    def dimensions(cross: tuple[str, str], model: str) -> tuple[str, str] | None:
        return global_cross_dimensions(cross, config.models[model], config.contexts)

    assert dimensions(("country", "device"), "fraud") == ("feature.country", "feature.device")
    assert dimensions(("country", "device"), "churn") is None  # churn declares no device
    # A context under contexts is a field of every model, listed (churn) or not (fraud).
    for model in (fraud, churn):
        pair = global_cross_dimensions(("country", "language"), model, config.contexts)
        assert pair == ("feature.country", "context.language")
    assert dimensions(("device", "plan"), "fraud") is None
    assert dimensions(("device", "plan"), "churn") is None
    assert dimensions(("country", "user_id"), "churn") is None  # segment: false


@pytest.mark.parametrize(
    ("cross", "message"),
    [
        ("[country, devise]", "segments.crosses[4] (line 9): 'devise' is not a declared "
         "feature or context (no model under models has it as a feature, nor does contexts "
         "name it); did you mean 'device'?"),
        ("[langage, device]", "segments.crosses[4] (line 9): 'langage' is not a declared "
         "feature or context (no model under models has it as a feature, nor does contexts "
         "name it); did you mean 'language'?"),
        ("[country, country]", "segments.crosses[4] (line 9): a cross needs two different "
         "fields"),
        ("[langage, devise]", "segments.crosses[4] (line 9): 'langage' and 'devise' are not "
         "declared features or contexts (no model under models has them as features, nor "
         "does contexts name them); for 'langage', did you mean 'language'?; for 'devise', "
         "did you mean 'device'?"),
    ],
)  # fmt: skip
def test_validate_refuses_a_field_declared_nowhere(cross: str, message: str) -> None:
    text = TWO_MODELS.replace(
        "    - [country, user_id]\n", f"    - [country, user_id]\n    - {cross}\n"
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text, source="crosses.yaml")
    assert refused.value.problems == [message]


def test_with_no_models_only_a_field_crossed_with_itself_is_refused() -> None:
    assert parse_config("segments:\n  crosses: [[country, devise]]\n").segments.crosses == (
        ("country", "devise"),
    )
    with pytest.raises(ConfigError, match="a cross needs two different fields"):
        parse_config("segments:\n  crosses: [[country, country]]\n")


def test_validate_and_explain_say_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(TWO_MODELS)
    assert main(["validate", str(good)]) == 0
    assert capsys.readouterr().out.endswith(
        ": valid (2 models, 1 context, 0 baselines, 0 expected biases)\n"
    )
    assert main(["explain", str(good), "--json"]) == 0
    rows = {(r[0], r[1]): r[2] for r in json.loads(capsys.readouterr().out)["models"]["rows"]}
    assert rows[("fraud", "country×device")] == 22 * 22  # top 20 + MISSING + __other__
    assert rows[("churn", "country×device")] == "skipped: no device"
    assert rows[("churn", "country×language")] == 22 * 22  # listed: every call has it
    assert rows[("fraud", "country×language")] == "in calls carrying language"
    assert rows[("fraud", "device×plan")] == "skipped: no plan"
    assert rows[("churn", "device×plan")] == "skipped: no device"
    assert rows[("fraud", "country×user_id")] == "skipped: no user_id"
    assert rows[("churn", "country×user_id")] == "skipped: user_id has segment: false"
    bad = tmp_path / "bad.yaml"
    bad.write_text(TWO_MODELS.replace("[device, plan]", "[device, plam]"))
    assert main(["validate", str(bad)]) == 2
    assert "segments.crosses[2] (line 7): 'plam' is not a declared" in capsys.readouterr().err


def test_the_collector_crosses_where_explain_says(recorder) -> None:  # type: ignore[no-untyped-def]
    """Every call carries every field (device and plan undeclared in churn and fraud):
    a declared model crosses only what explain says it does; an undeclared one, all it
    carries."""
    for name in ("fraud", "churn", "learned"):
        model = monitor(name, tracer_provider=recorder.provider)
        for country, device in (("BR", "ios"), ("US", "web")):
            language = {"fraud": "es", "churn": None, "learned": None}[name]
            with context(language=language), model.call() as call:
                call.features(country=country, device=device, plan="pro", user_id="u1")
    aggregator = SegmentAggregator(SegmentationPlan(parse_config(TWO_MODELS)))
    columns = aggregator.aggregate(decode_request(recorder.request())).columns
    pairs = zip(columns["model_name"], columns["segment_dim"], strict=True)
    assert {(model, dim) for model, dim in pairs if "×" in dim} == {
        ("fraud", "feature.country×feature.device"),
        ("fraud", "feature.country×context.language"),  # carried by fraud's calls
        ("churn", "feature.country×context.language"),  # listed: MISSING when not sent
        ("learned", "feature.country×feature.device"),
        ("learned", "feature.device×feature.plan"),
        ("learned", "feature.country×feature.user_id"),  # segment: false only in churn
    }


def _send(address: str, calls: dict[str, dict[str, str]]) -> int:
    """Send one call per model, each with its features and ``language`` as a context."""
    provider = service_tracer_provider(address, "crosses")
    for name, fields in calls.items():
        model = monitor(name, tracer_provider=provider)
        features = {k: v for k, v in fields.items() if k != "language"}
        with context(language=fields.get("language")), model.call() as call:
            call.features(**features)
    provider.force_flush()
    provider.shutdown()
    return len(calls)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (CONTEXT_NOT_LISTED, {("fraud", "context.language×feature.country"),
                              ("learned", "context.language×feature.country")}),
        (NO_MODELS, {("fraud", "feature.country×feature.device"),
                     ("learned", "feature.country×feature.device")}),
    ],
    ids=["a context the model does not list", "no models"],
)  # fmt: skip
def test_the_configs_refused_before_validate_start_and_cross(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, expected: set[object]
) -> None:
    """Both validate (exit 0) and the collector starts on them (what ``segwatch collector``
    loads: the start-up checks included) and crosses the fields in the calls carrying both."""
    path = tmp_path / "segwatch.yaml"
    path.write_text(
        config + f"storage:\n  dsn: chdb://{tmp_path / 'store'}\n"
        "receiver:\n  grpc: {endpoint: 127.0.0.1:0}\napi:\n  endpoint: 127.0.0.1:0\n"
        "scheduler:\n  enabled: false\n"
    )
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    collector = Collector(load_config(str(path), start="collector"))
    collector.start()
    try:
        assert collector.receiver is not None and collector.processor is not None
        fields = {"country": "BR", "device": "ios", "language": "es"}
        sent = _send(collector.receiver.address, {"fraud": fields, "learned": fields})
        stats = collector.processor.stats
        wait_until(lambda: stats.model_calls >= sent)
        collector.flush()
        client = collector._clients.api  # type: ignore[union-attr]
        crossed = client.query(
            "SELECT DISTINCT model_name, segment_dim FROM ml_segment_aggregates "
            "WHERE position(segment_dim, '×') > 0"
        ).result_rows
    finally:
        collector.shutdown()
    assert set(crossed) == expected
