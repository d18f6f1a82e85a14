"""One incident per injected fault, named at its root; none on clean traffic; five seeds each.

The traffic (tests/incident_scenarios.py) goes through the real SDK, decoder,
segmenter, aggregator and store; every default detector then runs on the
windows of the fault's last half hour as the scheduler would (each at its
cadence's boundaries, oldest first; the detectors due at one moment as one group,
two queries at once on two sessions), with the config's defaults: persistence,
FDR, minimum support. The same windows run one detector at a time on one session
store the same rows. Every model scores its calls from its inputs, so its
segments differ all the time without any fault, and no expected bias is
declared. Each seed is its own model: the detectors test every seed in one run. Their
false-discovery control then pools every model's tests, the faulted ones' true findings
included, which makes BH more lenient for the clean models than a run of their own would
be: their silence here is the harder claim.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from counting_client import CountingClient
from incident_scenarios import END, FAULTS, SCENARIOS, SEEDS, Fault, model_name, scenario_config
from incident_scenarios import simulate as simulate_scenarios

from segwatch.clickhouse.detection import DetectorSpec, run_detector, run_detector_group
from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.config.detector_specs import configured_detectors

RUN_FROM = END - 30 * 60  # the fault began 40 minutes before END


@dataclass
class _Store:
    client: Any
    specs: list[DetectorSpec]
    stored: dict[str, list[tuple[Any, ...]]]  # what the grouped runs stored (see _stored)
    incidents: list[dict[str, Any]]  # every incident (open or resolved), as ml_incidents has it


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Store]:
    """Every scenario and seed simulated, and their windows run as the scheduler would."""
    path: Path = tmp_path_factory.mktemp("incident-scenarios")
    client = open_client(parse_dsn(f"chdb://{path}"))
    helper = CountingClient(open_client(parse_dsn(f"chdb://{path}")))  # the second session
    try:
        apply_migrations(client)
        simulate_scenarios(client)
        models = [model_name(s, seed) for s in SCENARIOS for seed in SEEDS]
        specs = configured_detectors(scenario_config(models))
        _run_turns(client, specs, [helper])
        assert helper.statements > 0  # the group used its helper
        result = client.query("SELECT * FROM ml_incidents ORDER BY model_name, severity DESC")
        incidents = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
        yield _Store(client, specs, _stored(client), incidents)
    finally:
        helper.close()
        client.close()


@pytest.fixture(scope="module")
def incidents(store: _Store) -> list[dict[str, Any]]:
    return store.incidents


def _run_turns(client: Any, specs: list[DetectorSpec], helpers: list[Any]) -> None:
    """Every cadence boundary from RUN_FROM to END, the detectors due there as one group."""
    for tick in range(RUN_FROM, END + 1, 300):
        due = [spec for spec in specs if tick % spec.cadence == 0]
        moment = dt.datetime.fromtimestamp(tick, dt.timezone.utc)
        for outcome in run_detector_group(client, due, moment, helpers):
            assert not isinstance(outcome, Exception), outcome


_RUN_TABLES = {
    # what each run table holds, without when it was written (and scores rounded: a sum
    # over the engine's threads may differ in its last bits from one run to the next)
    "ml_anomalies": "detector, model_name, model_version, model_stage, segment_dim, "
    "segment_value, quantity, window_start, window_end, round(score, 6), support",
    "ml_anomaly_events": "state, detector, model_name, model_version, model_stage, segment_dim, "
    "segment_value, quantity, window_start, window_end",
    "ml_incident_members": "incident_id, model_name, detector, model_stage, model_version, "
    "segment_dim, segment_value, quantity, anomaly_opened_at, role, relation, state, resolved_at",
}


def _stored(client: Any) -> dict[str, list[tuple[Any, ...]]]:
    stored = {}
    for table, columns in _RUN_TABLES.items():
        query = f"SELECT {columns} FROM {table} FINAL ORDER BY ALL"
        stored[table] = [tuple(row) for row in client.query(query).result_rows]
    return stored


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


def test_one_detector_at_a_time_on_one_session_stores_the_same(store: _Store) -> None:
    """The scheduler's turn runs its detectors' queries two at once and joins their
    incidents afterwards in the manifest's order: the same windows run one detector at a
    time, each joining its incidents right after its query, store the same findings,
    transitions and incidents."""
    assert all(store.stored.values()), {t: len(rows) for t, rows in store.stored.items()}
    for table in (*_RUN_TABLES, "ml_segment_rollup_5m", "ml_segment_rollup_1h"):
        store.client.command(f"TRUNCATE TABLE {table}")
    for tick in range(RUN_FROM, END + 1, 300):
        for spec in store.specs:
            if tick % spec.cadence == 0:
                run_detector(store.client, spec, dt.datetime.fromtimestamp(tick, dt.timezone.utc))
    assert _stored(store.client) == store.stored
