"""The schema language the config and the detector manifest are written in."""

from __future__ import annotations

import datetime as dt

import yaml

from segwatch.clickhouse.yaml_schema import (
    ListOf,
    MapOf,
    Problems,
    Record,
    Scalar,
    at_least,
    read,
)

DOCUMENT = """\
query: >-
  SELECT count() > 0 FROM (SELECT model_name FROM ml_segment_aggregates WHERE x = '__all__'
    AND bucket_start >= {window_start:DateTime('UTC')} GROUP BY model_name HAVING count() > 0)
text: |
  two
  lines
plain: a long plain string that goes on and on past the eighty columns an emitter would wrap at
count: 3
ratio: 2
flag: yes
day: 2024-05-01
"""
SCHEMA = Record({
    "query": Scalar(str),
    "text": Scalar(str),
    "plain": Scalar(str),
    "count": Scalar(int),
    "ratio": Scalar(float),
    "flag": Scalar(bool),
    "day": Scalar(dt.date),
})  # fmt: skip


def test_values_are_what_yaml_reads() -> None:
    """Folded text (a detector's ``run_if``) too: it was once re-serialized and re-wrapped."""
    problems = Problems()
    value = read(DOCUMENT, SCHEMA, problems)
    assert problems.items == []
    expected = yaml.safe_load(DOCUMENT)
    expected["ratio"] = 2.0  # an integer where a number is asked for becomes a float
    assert value == expected
    assert isinstance(value["ratio"], float) and value["flag"] is True


def test_every_problem_with_its_path_and_line() -> None:
    schema = Record(
        {
            "items": ListOf(Record({"name": Scalar(str), "size": Scalar(int, at_least(0))},
                                   required=("name",))),
            "named": MapOf(Record({"size": Scalar(int)})),
            "values": MapOf(Scalar(int)),
        },
        required=("items",),
    )  # fmt: skip
    text = "items:\n  - {name: a, size: -1}\n  - {size: 2, colour: red}\n"
    text += "named:\n  x:\nvalues:\n  y:\n"
    problems = Problems()
    value = read(text, schema, problems)
    assert problems.items == [
        "items[0].size (line 2): must be at least 0",
        "items[1].colour (line 3): unknown key (known: name, size)",
        "items[1] (line 3): needs name",
        "values.y (line 7): must be an integer, not None",
    ]
    # A record that lacks a required key is still returned (its callers check); a user-named
    # key with nothing under it stands for a record of defaults, not for a missing value.
    assert value == {"items": [{"name": "a"}, {"size": 2}], "named": {"x": {}}, "values": {}}


def test_an_empty_document_lacks_the_required_keys() -> None:
    problems = Problems()
    assert read("# nothing\n", Record({"a": Scalar(int)}), problems) == {}
    assert problems.items == []
    assert read("", Record({"a": Scalar(int)}, required=("a",)), problems) == {}
    assert problems.items == ["(top level): needs a"]


def test_a_value_yaml_cannot_build_is_a_problem() -> None:
    problems = Problems()
    assert read("a: !!python/name:os.system x\n", Record({"a": Scalar(str)}), problems) == {}
    assert len(problems.items) == 1 and problems.items[0].startswith("a (line 1): cannot be read")
