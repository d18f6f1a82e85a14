"""The migrations' cluster form, read back by the real engine.

The embedded engine has no cluster (no ``remote_servers``, no Keeper), so the
cluster form cannot run here: every rendered statement is parsed by the engine
(``formatQuery``) instead, and the checks read the engine's own formatting of
it. The plain form is applied to a real store, whose tables and sorting keys
the cluster form is checked against.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from segwatch.clickhouse.cluster import (
    LOCAL_SUFFIX,
    RUNNER_TABLES,
    SHARDING_KEYS,
    ClusterRenderError,
    render_cluster_migrations,
)
from segwatch.clickhouse.migrate import Migration, apply_migrations, load_migrations
from segwatch.clickhouse.sql_text import split_statements
from segwatch.clickhouse.store import open_client, parse_dsn

CLUSTER = "segwatch_cluster"
REPLICA_PATH = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    """A store with the plain migrations applied (one per module: chdb allows one at a time)."""
    store: Path = tmp_path_factory.mktemp("cluster") / "store"
    client = open_client(parse_dsn(f"chdb://{store}"))
    apply_migrations(client)
    yield client
    client.close()


def _formatted(engine, statement: str) -> str:  # type: ignore[no-untyped-def]
    """The statement as the engine reads it (raises if it does not parse)."""
    rows = engine.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows
    return " ".join(str(rows[0][0]).split())  # one line, single spaces


def _statements(migrations: list[Migration]) -> list[str]:
    return [s for m in migrations for s in split_statements(m.sql)]


@pytest.fixture(scope="module")
def rendered(engine) -> list[str]:  # type: ignore[no-untyped-def]
    """Every statement of the cluster form, as the engine formats it."""
    cluster_form = render_cluster_migrations(load_migrations(), CLUSTER)
    return [_formatted(engine, s) for s in _statements(cluster_form)]


def test_the_plain_form_parses(engine) -> None:  # type: ignore[no-untyped-def]
    plain = _statements(load_migrations())
    assert len(plain) >= 20
    for statement in plain:
        assert _formatted(engine, statement)


def test_the_cluster_form_keeps_the_migrations_numbers_and_names() -> None:
    shipped = load_migrations()
    cluster_form = render_cluster_migrations(shipped, CLUSTER)
    assert [(m.version, m.name) for m in cluster_form] == [(m.version, m.name) for m in shipped]
    assert all(a.checksum != b.checksum for a, b in zip(shipped, cluster_form, strict=True))
    assert render_cluster_migrations(shipped, CLUSTER) == cluster_form  # deterministic


def test_every_ddl_statement_runs_on_the_cluster(rendered: list[str]) -> None:
    """But the runner's own table (the next test): it stays on the node the runner reaches."""
    ddl = [s for s in rendered if not s.startswith("INSERT") and not _creates_runner_table(s)]
    assert len(ddl) > len(rendered) / 2
    missing = [s[:90] for s in ddl if not re.search(rf"\bON CLUSTER {CLUSTER}\b", s)]
    assert missing == []


def _creates_runner_table(statement: str) -> bool:
    return any(f"CREATE TABLE IF NOT EXISTS {table} " in statement for table in RUNNER_TABLES)


def test_the_lease_table_stays_a_plain_table_on_the_node_the_runner_reaches(engine) -> None:  # type: ignore[no-untyped-def]
    """0012 makes segwatch_leases as segwatch.clickhouse.lease makes it before any migration:
    one table whose insert deduplication picks each key's one winner, not a sharded one."""
    shipped = next(m for m in load_migrations() if m.name == "0012_leases.sql")
    (cluster_form,) = render_cluster_migrations([shipped], CLUSTER)
    assert split_statements(cluster_form.sql) == split_statements(shipped.sql)
    (statement,) = split_statements(cluster_form.sql)
    formatted = _formatted(engine, statement)
    assert _creates_runner_table(formatted)
    assert "ON CLUSTER" not in formatted and "Distributed" not in formatted
    assert "ENGINE = MergeTree ORDER BY key" in formatted
    assert "non_replicated_deduplication_window = 100000" in formatted


def _created(rendered: list[str]) -> dict[str, str]:
    """Each CREATE TABLE statement of the cluster form by the name it creates."""
    found = {}
    for statement in rendered:
        match = re.match(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+) ON CLUSTER", statement)
        if match:
            found[match.group(1)] = statement
    return found


def test_every_table_is_replicated_behind_a_distributed_name(engine, rendered) -> None:  # type: ignore[no-untyped-def]
    tables = {
        name for (name,) in engine.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND engine LIKE '%MergeTree' AND NOT startsWith(name, 'segwatch_')"
        ).result_rows
    }  # fmt: skip
    # segwatch_* are the migration runner's own tables (tracking, lease), not migrations.
    assert {"ml_segment_aggregates", "ml_model_calls", "ml_anomalies"} <= tables
    created = _created(rendered)
    for table in tables:
        local = created[table + LOCAL_SUFFIX]
        assert re.search(rf"ENGINE = Replicated\w*MergeTree\({re.escape(REPLICA_PATH)}", local)
        distributed = created[table]
        expected = (
            f"ENGINE = Distributed({CLUSTER}, currentDatabase(), {table}{LOCAL_SUFFIX}, "
            f"{_formatted_key(engine, SHARDING_KEYS[table])})"
        )
        assert expected in distributed, distributed
        assert f"AS {table}{LOCAL_SUFFIX} " in distributed


def _formatted_key(engine, key: str) -> str:  # type: ignore[no-untyped-def]
    return _formatted(engine, f"SELECT {key}").removeprefix("SELECT ")


def test_engine_arguments_follow_the_replica_arguments(rendered: list[str]) -> None:
    created = _created(rendered)
    anomalies = created["ml_anomalies" + LOCAL_SUFFIX]
    assert f"ReplicatedReplacingMergeTree({REPLICA_PATH}, detected_at)" in anomalies
    aggregates = created["ml_segment_aggregates" + LOCAL_SUFFIX]
    assert f"ReplicatedAggregatingMergeTree({REPLICA_PATH})" in aggregates
    assert (
        "replicated_deduplication_window = 10000"
        in created["ml_segment_aggregates_by_time" + LOCAL_SUFFIX]
    )
    replicated = [s for s in rendered if not _creates_runner_table(s)]
    assert not any("non_replicated_deduplication_window" in s for s in replicated)


def test_rows_that_merge_share_a_shard(engine) -> None:  # type: ignore[no-untyped-def]
    """Aggregating and replacing tables shard by columns of their sorting key, time left out."""
    merging = engine.query(
        "SELECT name, sorting_key FROM system.tables WHERE database = currentDatabase() "
        "AND (engine LIKE 'Aggregating%' OR engine LIKE 'Replacing%') "
        "AND NOT startsWith(name, 'segwatch_')"
    ).result_rows
    assert len(merging) >= 7
    for table, sorting_key in merging:
        key_columns = set(re.findall(r"\w+", SHARDING_KEYS[table])) - {"cityHash64"}
        assert key_columns <= set(re.findall(r"\w+", sorting_key)), table
        assert not key_columns & {"bucket_start", "window_start", "window_end", "timestamp"}
    segment = {"model_name", "model_version", "model_stage", "quantity", "segment_dim"}
    for table in ("ml_segment_aggregates", "ml_segment_rollup_5m", "ml_segment_rollup_1h"):
        assert set(re.findall(r"\w+", SHARDING_KEYS[table])) >= segment | {"segment_value"}


def test_a_label_lands_on_its_calls_shard(engine) -> None:  # type: ignore[no-untyped-def]
    """The co-located view needs the calls' and the labels' keys to hash alike."""
    engine.command(
        "INSERT INTO ml_model_calls (timestamp, trace_id, span_id, model_name, prediction_id) "
        "VALUES (now64(9), 'ab', 's1', 'fraud', 'p-17'), (now64(9), 'cd', 's2', 'fraud', '')"
    )
    engine.command("INSERT INTO ml_labels (timestamp, model_name, prediction_id) VALUES "
                   "(now64(9), 'fraud', 'p-17')")  # fmt: skip
    calls = engine.query(
        f"SELECT prediction_id, {SHARDING_KEYS['ml_model_calls']} FROM ml_model_calls "
        "WHERE model_name = 'fraud'"
    ).result_rows
    (label,) = engine.query(
        f"SELECT {SHARDING_KEYS['ml_labels']} FROM ml_labels WHERE model_name = 'fraud'"
    ).result_rows
    keys = dict(calls)
    assert keys["p-17"] == label[0]
    assert keys[""] != label[0]  # a call without a prediction id spreads by its span id


def test_the_labelled_calls_view_joins_on_each_shard(rendered: list[str]) -> None:
    created = _created(rendered)
    (local_view,) = [s for s in rendered if s.startswith("CREATE VIEW IF NOT EXISTS ml_labeled")]
    assert "ml_labeled_calls_local ON CLUSTER" in local_view
    assert "FROM ml_model_calls_local AS c" in local_view
    assert "FROM ml_labels_local FINAL" in local_view
    assert (
        f"Distributed({CLUSTER}, currentDatabase(), ml_labeled_calls_local)"
        in created["ml_labeled_calls"]
    )


def test_the_incidents_view_reads_the_distributed_members(rendered: list[str]) -> None:
    """An incident's members share a shard (its sharding key), so FINAL on each shard and
    the view's GROUP BY over the Distributed table see each incident whole."""
    (view,) = [s for s in rendered if s.startswith("CREATE VIEW IF NOT EXISTS ml_incidents")]
    assert f"ml_incidents ON CLUSTER {CLUSTER}" in view
    assert "FROM ml_incident_members FINAL" in view and "_local" not in view
    assert SHARDING_KEYS["ml_incident_members"] == "cityHash64(model_name, incident_id)"


def test_the_rebuild_copies_on_each_shard_and_swaps_the_local_tables(rendered) -> None:  # type: ignore[no-untyped-def]
    (copy,) = [s for s in rendered if s.startswith("INSERT")]
    assert copy.startswith("INSERT INTO ml_segment_aggregates_by_time ")
    assert "parallel_distributed_insert_select = 2" in copy
    assert (
        f"EXCHANGE TABLES ml_segment_aggregates_local AND ml_segment_aggregates_by_time_local "
        f"ON CLUSTER {CLUSTER}" in rendered
    )
    drops = [s for s in rendered if s.startswith("DROP")]
    assert drops == [
        f"DROP TABLE ml_segment_aggregates_by_time ON CLUSTER {CLUSTER} SYNC",
        f"DROP TABLE ml_segment_aggregates_by_time_local ON CLUSTER {CLUSTER} SYNC",
    ]


@pytest.mark.parametrize("name", ["", "prod-eu", "x; DROP DATABASE segwatch", "1st", "a b"])
def test_a_bad_cluster_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cluster name"):
        render_cluster_migrations(load_migrations(), name)


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("CREATE TABLE ml_new (x UInt8) ENGINE = MergeTree ORDER BY x", "no sharding key"),
        ("CREATE TABLE ml_labels AS ml_model_calls", "names no ENGINE"),
        ("CREATE TABLE ml_labels (x UInt8) ENGINE = Memory", "not a plain MergeTree"),
        (
            "CREATE VIEW v AS SELECT * FROM ml_anomalies AS a JOIN ml_labels AS l USING model_name",
            "joins tables",
        ),
        ("INSERT INTO ml_labels SELECT * FROM ml_anomalies", "share a sharding key"),
        ("CREATE MATERIALIZED VIEW v AS SELECT * FROM ml_labels", "needs TO"),
        (
            "ALTER TABLE ml_labels ADD COLUMN y UInt8, MODIFY SETTING index_granularity = 1",
            "separate",
        ),
        ("OPTIMIZE TABLE ml_labels FINAL", "no cluster form"),
        ("CREATE TABLE other.ml_labels (x UInt8) ENGINE = MergeTree ORDER BY x", "qualified"),
    ],
)
def test_statements_without_a_safe_cluster_form_are_refused(sql: str, refusal: str) -> None:
    migration = Migration(99, "0099_new.sql", sql + ";")
    with pytest.raises(ClusterRenderError, match=f"0099_new.sql: .*{refusal}"):
        render_cluster_migrations([migration], CLUSTER)


def test_a_materialized_view_reads_and_writes_local_tables(engine) -> None:  # type: ignore[no-untyped-def]
    migration = Migration(
        99,
        "0099_mv.sql",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS ml_rollup_mv TO ml_segment_rollup_5m AS "
        "SELECT * FROM ml_segment_aggregates ARRAY JOIN exemplar_trace_ids AS t;",
    )
    (statement,) = split_statements(render_cluster_migrations([migration], CLUSTER)[0].sql)
    formatted = _formatted(engine, statement)
    assert formatted.startswith(
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS ml_rollup_mv ON CLUSTER {CLUSTER} "
        "TO ml_segment_rollup_5m_local AS SELECT * FROM ml_segment_aggregates_local"
    )
