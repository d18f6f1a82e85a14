"""Global crosses (``segments.crosses``): one rule for validate, explain and the collector.

A global cross applies in every model that declares both of its fields (features, or
contexts the model lists; not ``segment: false``) and is skipped in the others;
``segwatch validate`` refuses one that applies in no declared model, naming the cross
with its YAML path and line; ``segwatch explain`` shows where each applies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.cli.main import main
from segwatch.collector.config import ConfigError, parse_config
from segwatch.collector.config.fields import models_crossing
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.instrumentation import monitor

TWO_MODELS = """\
contexts:
  language: {type: category}
segments:
  crosses:
    - [country, device]
    - [country, language]
models:
  fraud:
    features:
      country: {type: category}
      device: {type: category}
  churn:
    features:
      country: {type: category}
      plan: {type: category}
    contexts: [language]
"""


def test_a_global_cross_applies_in_the_models_that_declare_both() -> None:
    config = parse_config(TWO_MODELS)
    assert models_crossing(("country", "device"), config.models, config.contexts) == ["fraud"]
    assert models_crossing(("country", "language"), config.models, config.contexts) == ["churn"]


@pytest.mark.parametrize(
    ("cross", "message"),
    [
        ("[country, devise]", "segments.crosses[2] (line 7): 'devise' is not a declared feature "
         "or context of any model, so the cross [country, devise] applies in none"),
        ("[device, plan]", "segments.crosses[2] (line 7): the cross [device, plan] applies in "
         "no model: none declares both (device in fraud; plan in churn)"),
        ("[country, user_id]", "segments.crosses[2] (line 7): 'user_id' has segment: false "
         "wherever it is declared, so the cross [country, user_id] applies in none"),
        ("[country, country]", "segments.crosses[2] (line 7): a cross needs two different "
         "fields"),
    ],
)  # fmt: skip
def test_a_global_cross_that_applies_nowhere_is_refused(cross: str, message: str) -> None:
    text = TWO_MODELS.replace(
        "    - [country, language]\n", f"    - [country, language]\n    - {cross}\n"
    ).replace("      plan: {type: category}\n",
              "      plan: {type: category}\n      user_id: {segment: false}\n")  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        parse_config(text, source="crosses.yaml")
    assert refused.value.problems == [message]


def test_validate_and_explain_say_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(TWO_MODELS)
    assert main(["validate", str(good)]) == 0
    assert capsys.readouterr().out.endswith(
        ": valid (2 models, 1 contexts, 0 baselines, 0 expected biases)\n"
    )
    assert main(["explain", str(good), "--json"]) == 0
    rows = {(r[0], r[1]): r[2] for r in json.loads(capsys.readouterr().out)["models"]["rows"]}
    assert rows[("fraud", "country×device")] == 22 * 22  # top 20 + MISSING + __other__
    assert rows[("churn", "country×language")] == 22 * 22
    assert rows[("churn", "country×device")] == "skipped: no device"
    assert rows[("fraud", "country×language")] == "skipped: no language"
    bad = tmp_path / "bad.yaml"
    bad.write_text(TWO_MODELS.replace("[country, device]", "[device, plan]"))
    assert main(["validate", str(bad)]) == 2
    assert "segments.crosses[0] (line 5): the cross [device, plan]" in capsys.readouterr().err


def test_the_collector_crosses_where_explain_says(recorder) -> None:  # type: ignore[no-untyped-def]
    """The aggregator crosses country × device in fraud only, country × language in churn
    only: where explain says each applies."""
    fraud = monitor("fraud", tracer_provider=recorder.provider)
    churn = monitor("churn", tracer_provider=recorder.provider)
    for country, device in (("BR", "ios"), ("US", "web")):
        with fraud.call(start_time=10**18, end_time=10**18 + 1) as call:
            call.features(country=country, device=device)
        with churn.call(start_time=10**18, end_time=10**18 + 1) as call:
            call.features(country=country, plan="pro")
    aggregator = SegmentAggregator(SegmentationPlan(parse_config(TWO_MODELS)))
    columns = aggregator.aggregate(decode_request(recorder.request())).columns
    dimensions = {
        (model, dim) for model, dim in zip(columns["model_name"], columns["segment_dim"],
                                           strict=True)
    }  # fmt: skip
    crossed = {(m, d) for m, d in dimensions if "×" in d}
    assert crossed == {
        ("fraud", "feature.country×feature.device"),
        ("churn", "feature.country×context.language"),  # declared: MISSING when not sent
    }
