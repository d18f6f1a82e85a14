"""One incident per injected fault, named at its root; none on clean traffic; five seeds each.

The traffic (tests/incident_scenarios.py) goes through the real SDK, decoder,
segmenter, aggregator and store; every default detector then runs on the
windows of the fault's last half hour as the scheduler would (each at its
cadence's boundaries, oldest first), with the config's defaults: persistence,
FDR, minimum support. Every model scores its calls from its inputs, so its
segments differ all the time without any fault, and no expected bias is
declared. Each seed is its own model: the detectors test every seed in one run. Their
false-discovery control then pools every model's tests, the faulted ones' true findings
included, which makes BH more lenient for the clean models than a run of their own would
be: their silence here is the harder claim.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from incident_scenarios import END, FAULTS, SCENARIOS, SEEDS, Fault, model_name, scenario_config
from incident_scenarios import simulate as simulate_scenarios

from segwatch.clickhouse.detection import run_detector
from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config.detector_specs import configured_detectors

RUN_FROM = END - 30 * 60  # the fault began 40 minutes before END


@pytest.fixture(scope="module")
def incidents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """Every incident (open or resolved) of every scenario and seed, as ml_incidents has it."""
    path: Path = tmp_path_factory.mktemp("incident-scenarios")
    client = open_client(parse_dsn(f"chdb://{path}"))
    try:
        apply_migrations(client)
        simulate_scenarios(client)
        models = [model_name(s, seed) for s in SCENARIOS for seed in SEEDS]
        specs = configured_detectors(scenario_config(models))
        for tick in range(RUN_FROM, END + 1, 300):
            for spec in specs:
                if tick % spec.cadence == 0:
                    run_detector(client, spec, dt.datetime.fromtimestamp(tick, dt.timezone.utc))
        result = client.query("SELECT * FROM ml_incidents ORDER BY model_name, severity DESC")
        yield [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    finally:
        client.close()


def _root(incident: dict[str, Any]) -> tuple[str, str, str]:
    return (incident["root_segment_dim"], incident["root_segment_value"], incident["root_quantity"])


@pytest.mark.parametrize("fault", FAULTS, ids=[f.scenario for f in FAULTS])
def test_each_fault_is_one_incident_named_at_its_root(
    incidents: list[dict[str, Any]], fault: Fault
) -> None:
    for seed in SEEDS:
        model = model_name(fault.scenario, seed)
        found = [i for i in incidents if i["model_name"] == model]
        assert [_root(i) for i in found] == [
            (fault.segment_dim, fault.segment_value, fault.quantity)
        ], (model, [(_root(i), i["root_detector"], i["consequences"]) for i in found])
        assert found[0]["state"] == "open", model


def test_the_faults_echoes_are_consequences_not_incidents(incidents: list[dict[str, Any]]) -> None:
    """A fault shows in several detectors, quantities or segments: those findings are the
    incident's consequences (in most seeds there are some: the test sees them join)."""
    faulted = [i for i in incidents if not i["model_name"].startswith("clean-")]
    with_echoes = [i for i in faulted if i["consequences"]]
    assert len(with_echoes) >= len(FAULTS) * len(SEEDS) // 2, [
        (i["model_name"], i["anomalies"]) for i in faulted
    ]


def test_clean_traffic_opens_no_incident(incidents: list[dict[str, Any]]) -> None:
    clean = [i for i in incidents if i["model_name"].startswith("clean-")]
    assert clean == []
