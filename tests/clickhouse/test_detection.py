"""The PSI detector on the real embedded ClickHouse, checked against numpy."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import numpy as np
import pytest
from shop_traffic import END, ingest, traffic

from segwatch.clickhouse.detection import (
    ManifestError,
    load_manifest,
    parse_duration,
    run_detector_group,
    run_detectors,
)


def _psi(b: np.ndarray, c: np.ndarray) -> float:
    pb = (b + 0.5) / (b.sum() + 0.5 * len(b))
    pc = (c + 0.5) / (c.sum() + 0.5 * len(c))
    return float(np.sum((pc - pb) * np.log(pc / pb)))


def test_psi_matches_numpy_and_reruns_add_nothing(client, recorder) -> None:
    rows, before, now = traffic(seed=3, color_weights_now=[0.2, 0.3, 0.5])
    ingest(client, recorder, rows)
    at = dt.datetime.fromtimestamp(END, dt.timezone.utc)
    runs = {r.detector: r for r in run_detectors(client, at)}
    assert runs["psi_drift_training"].new_anomalies == []  # no training profile loaded
    run = runs["psi_drift"]
    found = {(a["segment_dim"], a["segment_value"], a["quantity"]): a for a in run.new_anomalies}
    # A global shift of color: every size drifts alike, so the whole model is the culprit.
    assert set(found) == {("__all__", "__all__", "feature.color")}
    anomaly = found[("__all__", "__all__", "feature.color")]
    assert anomaly["score"] == pytest.approx(_psi(before, now), rel=1e-9)
    assert anomaly["support"] == now.sum() and anomaly["baseline_support"] == before.sum()
    assert "PSI" in anomaly["details"] and len(anomaly["exemplar_trace_ids"][0]) == 32
    assert all(r.new_anomalies == [] for r in run_detectors(client, at))  # a rerun
    count = client.query("SELECT count() FROM ml_anomalies FINAL").result_rows[0][0]
    assert count == 1


def test_no_anomaly_without_drift(client, recorder) -> None:
    rows, _, _ = traffic(seed=4, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows)
    runs = run_detectors(client, dt.datetime.fromtimestamp(END, dt.timezone.utc))
    assert all(r.new_anomalies == [] for r in runs)


def test_partial_rows_merge_in_clickhouse(client, recorder) -> None:
    rows, _, _ = traffic(seed=5, color_weights_now=[0.5, 0.3, 0.2])
    ingest(client, recorder, rows[::2])
    ingest(client, recorder, rows[1::2])
    client.command("OPTIMIZE TABLE ml_segment_aggregates FINAL")
    merged = client.query(
        "SELECT count(), sum(count) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.color'"
    ).result_rows[0]
    minutes = len({at // 60 for at, _ in rows})
    assert merged == (minutes, len(rows))  # one merged row per minute, every call counted


def test_manifest_is_valid_and_durations_parse() -> None:
    psi, training = load_manifest()[:2]
    assert (psi.name, psi.window, psi.baseline) == ("psi_drift", 900, 3600)
    assert training.parameters["baseline_name"] == "training"
    assert "ml_baseline_aggregates" in training.sql and "ml_baseline_aggregates" not in psi.sql
    assert "/*@" not in psi.sql + training.sql  # every fragment marker was filled
    assert parse_duration("2h") == 7200
    for bad in ["", "5", "0m", "1w", "m5"]:
        with pytest.raises(ValueError):
            parse_duration(bad)


def _manifest_package(root: Path, name: str, manifest: str, sql_files: dict[str, str]) -> str:
    """A package ``name`` under ``root`` (on sys.path) holding a manifest and its SQL files.

    Each test names its own package: Python caches an imported package by name.
    """
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "manifest.yaml").write_text(textwrap.dedent(manifest))
    for file_name, sql in sql_files.items():
        (package / file_name).write_text(sql)
    return name


def test_bad_manifest_lists_every_problem(tmp_path, monkeypatch) -> None:
    package = _manifest_package(
        tmp_path,
        "fake_detectors",
        """\
        detectors:
          - name: ok
            cadence: 5x
            window: 15m
            baseline: 1h
            colour: red
            parameters: {window_start: 1}
          - name: Bad-Name
          - name: missing_file
            file: nope.sql
            cadence: 1m
            window: 1m
            baseline: 1m
        """,
        {"ok.sql": "SELECT 1"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ManifestError) as info:
        load_manifest(package)
    assert str(tmp_path / package / "manifest.yaml") in str(info.value)
    expected = [
        "detectors[0].cadence (line 3): duration '5x'",
        "detectors[0].colour (line 6): unknown key",
        "detectors[0].parameters.window_start (line 7): 'window_start' is not an allowed",
        "detectors[1].name (line 8): 'Bad-Name' must match",
        "detectors[1] (line 8): needs cadence, window, baseline",
        "detectors[2].cadence (line 11): 60 s is not a whole number of 5 minutes",
        "detectors[2].window (line 12): 60 s",
        "detectors[2].baseline (line 13): 60 s",
        "detectors[2].file (line 10): nope.sql does not exist",
    ]
    problems = info.value.problems
    assert len(problems) == len(expected), problems
    for start in expected:
        assert sum(p.startswith(start) for p in problems) == 1, (start, problems)


def test_manifest_errors_name_the_file_the_yaml_path_and_the_line(tmp_path, monkeypatch) -> None:
    """What the schema checks (a window below zero, an unknown key) and what needs the other
    entries or the files (a name taken twice, a fragment without its marker) alike."""
    package = _manifest_package(
        tmp_path,
        "fake_detectors_lines",
        """\
        # a comment, so that lines are not indexes
        detectors:
          - name: drift
            cadence: 5m
            window: -15m
            baseline: 1h
            persistance: {found: 2, windows: 3}
          - name: drift
            file: other.sql
            fragments: {unused: part.sql}
            cadence: 5m
            window: 15m
            baseline: 1h
            persistence: {found: 3, windows: 2}
        """,
        {"drift.sql": "SELECT 1", "other.sql": "SELECT 2", "part.sql": "1"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ManifestError) as info:
        load_manifest(package)
    message = str(info.value)
    assert message.startswith(f"invalid detector manifest {tmp_path / package / 'manifest.yaml'}")
    assert info.value.problems == [
        "detectors[0].window (line 5): duration '-15m' must be a positive number with s, m, h or d",
        "detectors[0].persistance (line 7): unknown key; did you mean 'persistence'? (known: "
        "baseline, cadence, delay, description, emits, file, fragments, name, parameters, "
        "persistence, run_if, window)",
        "detectors[1].name (line 8): drift is defined twice",
        "detectors[1].fragments (line 10): no marker for unused in other.sql",
        "detectors[1].persistence (line 14): persistence needs 1 <= found <= windows <= 100, "
        "not 3 of 2",
    ]
    assert all(f"  - {problem}" in message for problem in info.value.problems)


def test_a_manifest_that_is_not_yaml_or_lists_no_detectors(tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = _manifest_package(tmp_path, "fake_detectors_broken", "detectors: [\n", {})
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(broken)
    empty = _manifest_package(tmp_path, "fake_detectors_empty", "detectors: {}\n", {})
    with pytest.raises(ManifestError, match=r"detectors \(line 1\): must be a list"):
        load_manifest(empty)
    nothing = _manifest_package(tmp_path, "fake_detectors_nothing", "# no detectors\n", {})
    with pytest.raises(ManifestError, match=r"\(top level\): needs detectors"):
        load_manifest(nothing)


def test_a_group_shares_the_engines_threads_among_its_queries(client, recorder, store_dsn) -> None:  # type: ignore[no-untyped-def]
    """Two detector queries at once each get half the engine's threads (at least one): two
    of two threads each on two cores spent more CPU than one each. A detector alone keeps
    the engine's own."""
    from counting_client import CountingClient

    from segwatch.clickhouse.store import open_client, parse_dsn

    ingest(client, recorder, traffic(seed=3, color_weights_now=[0.2, 0.3, 0.5])[0])
    specs = {s.name: s for s in load_manifest()}
    at = dt.datetime.fromtimestamp(END, dt.timezone.utc)
    engine = int(client.query("SELECT getSetting('max_threads')").result_rows[0][0])
    main, helper = CountingClient(client), CountingClient(open_client(parse_dsn(store_dsn)))
    try:
        group = [specs["psi_drift"], specs["volume"], specs["data_quality"]]
        outcomes = run_detector_group(main, group, at, [helper])
        assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
        alone = CountingClient(client)
        run_detector_group(alone, [specs["bias"]], at, [helper])
    finally:
        helper.close()

    def detector_queries(recorded: CountingClient) -> list[dict]:  # type: ignore[type-arg]
        return [settings for sql, settings in recorded.settings if sql.startswith("-- ")]

    grouped = detector_queries(main) + detector_queries(helper)
    assert len(grouped) == 3 and detector_queries(helper)  # each once, on both sessions
    assert {settings.get("max_threads") for settings in grouped} == {max(1, engine // 2)}
    assert [settings.get("max_threads") for settings in detector_queries(alone)] == [None]


def _on_a_helper() -> bool:
    """Whether this thread is one of run_detector_group's helper sessions."""
    import threading

    return threading.current_thread().name.startswith("segwatch-detect-")


def _first_run_to_the_first_session(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Make a group's work queue hand its first run to the first session (the thread that
    called run_detector_group, not a helper's ``segwatch-detect-<n>``), so which session
    takes which of two runs is fixed."""
    import queue
    import threading

    from segwatch.clickhouse import detection

    first_taken = threading.Event()

    class FirstRunToTheFirstSession(queue.SimpleQueue):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.creator = threading.current_thread()  # the group's first session

        def get_nowait(self):  # type: ignore[no-untyped-def]
            if _on_a_helper():
                first_taken.wait(30)
            elif threading.current_thread() is self.creator:
                first_taken.set()
            return super().get_nowait()

    monkeypatch.setattr(detection.queue, "SimpleQueue", FirstRunToTheFirstSession)


def test_a_group_joins_a_runs_incidents_while_helpers_still_evaluate(  # type: ignore[no-untyped-def]
    client, recorder, store_dsn, monkeypatch
) -> None:
    """Once the first session has no detector left to evaluate, it joins the incidents of
    the runs evaluated so far, in order, while a helper still evaluates a later one. The
    helper's run here waits for the first run's join (at most 30 s, for a loaded machine):
    joined only after every run, as before, it would wait in vain."""
    import threading

    from segwatch.clickhouse import detection
    from segwatch.clickhouse.store import open_client, parse_dsn

    ingest(client, recorder, traffic(seed=3, color_weights_now=[0.2, 0.3, 0.5])[0])
    specs = {s.name: s for s in load_manifest()}
    joined, waited = threading.Event(), []
    original_join, original_should_run = detection.join_incidents, detection._should_run

    def join_incidents(*args, **kwargs):  # type: ignore[no-untyped-def]
        joined.set()
        return original_join(*args, **kwargs)

    def should_run(session, spec, parameters):  # type: ignore[no-untyped-def]
        if _on_a_helper():
            waited.append((spec.name, joined.wait(30)))
        return original_should_run(session, spec, parameters)

    _first_run_to_the_first_session(monkeypatch)
    monkeypatch.setattr(detection, "join_incidents", join_incidents)
    monkeypatch.setattr(detection, "_should_run", should_run)
    helper = open_client(parse_dsn(store_dsn))
    try:
        at = dt.datetime.fromtimestamp(END, dt.timezone.utc)
        outcomes = run_detector_group(client, [specs["volume"], specs["psi_drift"]], at, [helper])
    finally:
        helper.close()
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert [o.detector for o in outcomes] == ["volume", "psi_drift"]  # type: ignore[union-attr]
    assert waited == [("psi_drift", True)]
    assert [a["quantity"] for a in outcomes[1].new_anomalies] == ["feature.color"]  # type: ignore[union-attr]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # it dies
def test_a_helper_thread_that_dies_fails_its_run_and_the_group_still_returns(  # type: ignore[no-untyped-def]
    client, recorder, store_dsn, monkeypatch
) -> None:
    """A helper thread ended by a BaseException mid-run (not caught as a run's failure):
    its run is reported as not ended, the other run settles, and the group returns rather
    than wait for the dead run forever (the call runs in a thread here, so a hang fails
    the test after 60 s instead of stopping the suite)."""
    import threading

    from segwatch.clickhouse import detection
    from segwatch.clickhouse.store import open_client, parse_dsn

    ingest(client, recorder, traffic(seed=3, color_weights_now=[0.2, 0.3, 0.5])[0])
    specs = {s.name: s for s in load_manifest()}
    original_should_run = detection._should_run

    def should_run(session, spec, parameters):  # type: ignore[no-untyped-def]
        if _on_a_helper():
            raise SystemExit("the helper thread ends here")
        return original_should_run(session, spec, parameters)

    monkeypatch.setattr(detection, "_should_run", should_run)
    helper = open_client(parse_dsn(store_dsn))
    outcomes: list = []  # type: ignore[type-arg]
    at = dt.datetime.fromtimestamp(END, dt.timezone.utc)

    def group() -> None:
        outcomes.extend(
            run_detector_group(client, [specs["volume"], specs["psi_drift"]], at, [helper])
        )

    try:
        _first_run_to_the_first_session(monkeypatch)
        runner = threading.Thread(target=group, daemon=True)
        runner.start()
        runner.join(60)
        assert not runner.is_alive(), "the group waited for the dead helper's run"
    finally:
        helper.close()
    volume, psi = outcomes
    assert volume.detector == "volume" and isinstance(psi, RuntimeError)
    assert "did not end" in str(psi)
