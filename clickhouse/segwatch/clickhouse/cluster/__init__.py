"""The migrations for a ClickHouse cluster: ON CLUSTER, Replicated tables, Distributed names.

:func:`render_cluster_migrations` turns the shipped migrations (written for one
store) into the same migrations for the cluster ``cluster`` of a ClickHouse
server's ``remote_servers``. The code keeps using the names it uses today:

- Every table ``t`` of the migrations becomes ``t_local`` on every node, with
  the ``Replicated*`` counterpart of its engine (``ReplicatedMergeTree``,
  ``ReplicatedAggregatingMergeTree``, ``ReplicatedReplacingMergeTree``, ...),
  the arguments ``'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'``
  and then the engine's own (``ReplacingMergeTree(detected_at)``'s version
  column). ClickHouse expands ``{database}`` and ``{table}`` when it creates the
  table, so a table keeps its Keeper path when it is renamed or exchanged.
- ``t`` itself becomes ``Distributed(cluster, currentDatabase(), t_local, key)``:
  collectors insert into it, detectors and analysts read it. Its comment is the
  table's. ``SETTINGS non_replicated_deduplication_window`` becomes
  ``replicated_deduplication_window``: a replicated table deduplicates inserts
  with the latter and ignores the former.
- Every DDL statement runs ``ON CLUSTER cluster``. ``ALTER`` goes to ``t_local``
  (settings, TTLs, mutations), and to ``t`` too when it changes columns or
  comments, since a Distributed table keeps its own column list.
  ``TRUNCATE`` and ``EXCHANGE`` act on the local tables, ``DROP`` on both.

Sharding keys (:data:`SHARDING_KEYS`). An ``AggregatingMergeTree`` merges only
rows that sit in the same table on the same shard, and a ``ReplacingMergeTree``
replaces (and ``FINAL`` dedupes) only there too. So each table is sharded by a
hash of columns of its sorting key without the time: every row that must merge
with another has the same key values, hence the same hash, hence the same shard.
For the aggregates (and their roll-ups) that is (model, version, stage,
quantity, segment dimension, segment value): the rows of one segment's series
always land together, whichever collector wrote them; and since it is the
segment, not the model, that picks the shard, one busy model still spreads over
every shard. Leaving the time out keeps a segment's whole series on one shard,
so the roll-ups and ``FINAL`` reads of a bucket never need two shards. Anomalies
and their events are sharded by their finding's key (detector, model, version,
stage, segment, quantity): a rerun of a window replaces its rows on the same
shard. Labels are sharded by (model, prediction id), and raw calls by (model,
prediction id), or the span id when a call has none, so that a label and the
call it grades are always on the same shard (see the view below) while calls
without a prediction id still spread evenly.

Views. ``ml_labeled_calls`` (0004) joins calls with their labels. Over the
Distributed tables that join would be a distributed subquery inside a
distributed query, which ClickHouse refuses (``distributed_product_mode``), and
``GLOBAL JOIN`` would ship every label to every shard. Calls and labels are
co-located instead, so each shard joins its own: ``ml_labeled_calls_local`` is
the view over the local tables and ``ml_labeled_calls`` a Distributed table over
it (:data:`CO_LOCATED_VIEWS`). Any other view reads the Distributed names; a view
that joins must be co-located, or it is refused. A query that joins calls and
labels itself (the ``performance`` detector) relies on the same co-location,
run with ``distributed_product_mode = 'local'``.

Materialized views. The migrations have none: the roll-ups of 0010 are plain
``ReplacingMergeTree`` tables that the detector runner fills with ``INSERT ...
SELECT`` through the Distributed names (:mod:`.rollups`), sharded like the
minute rows they sum, so ``FINAL`` finds every roll-up of a bucket on one shard.
A materialized view would fire on each shard's inserts into its local source:
one is rendered to read the local source and write ``TO`` the local target, and
only when both share a sharding key (each shard's rows then belong to that
shard in the target too); one without ``TO`` is refused.

Rebuilding a table (0011: copy, ``EXCHANGE``, drop). The copy's local table is
created with the new sorting key, the copy runs with
``parallel_distributed_insert_select = 2`` (both tables are Distributed over the
same cluster with the same sharding key, so each shard copies its own rows into
its own new table and nothing crosses the network), ``EXCHANGE TABLES`` swaps
the *local* tables on every node (``ml_segment_aggregates`` keeps pointing at
``ml_segment_aggregates_local``, which now has the new order), and the copy's
Distributed and local tables are dropped. An ``INSERT ... SELECT`` between
tables sharded differently is refused: its rows would stay on the wrong shards.
As on one store, the rebuild needs writers to be quiet while it runs.

The runner's own tables. The migrations' tracking table and ``segwatch_leases``
(the migrations' lease and the detector windows' claims, :mod:`.lease`) are
made by the runner itself, before any migration runs, as plain ``MergeTree``
tables on the node its DSN reaches: one winner per key needs every claimant
to insert into one table (insert deduplication is per table; a Replicated
table would deduplicate through Keeper instead). Migration 0012, which gives
``segwatch_leases`` to stores migrated before it existed, is therefore
rendered as written (:data:`RUNNER_TABLES`): no ``ON CLUSTER``, no Replicated
engine, no Distributed name; on the node the runner reaches it finds the table
already made. ``segwatch migrate`` and every collector must reach that one
node.

The code: :mod:`.keys` holds each table's sharding key and the names above,
:mod:`.statement` a statement's tokens and the edits made to them, and
:mod:`.render` the cluster form of each kind of statement.
"""

from __future__ import annotations

from segwatch.clickhouse.migrate import Migration
from segwatch.clickhouse.sql_text import split_statements
from segwatch.clickhouse.store import validate_identifier

from .keys import CO_LOCATED_VIEWS, LOCAL_SUFFIX, REPLICA_ARGUMENTS, RUNNER_TABLES, SHARDING_KEYS
from .render import render_statement
from .statement import ClusterRenderError, Statement

__all__ = [
    "CO_LOCATED_VIEWS",
    "LOCAL_SUFFIX",
    "REPLICA_ARGUMENTS",
    "RUNNER_TABLES",
    "SHARDING_KEYS",
    "ClusterRenderError",
    "render_cluster_migrations",
]


def render_cluster_migrations(migrations: list[Migration], cluster: str) -> list[Migration]:
    """The same migrations (numbers and names) written for the ClickHouse cluster ``cluster``.

    ``cluster`` must be a plain identifier (``ValueError`` otherwise); a
    statement with no safe cluster form raises :class:`ClusterRenderError`
    naming its migration. Pure: nothing is executed.
    """
    validate_identifier(cluster, "cluster name")
    return [Migration(m.version, m.name, _render_migration(m, cluster)) for m in migrations]


def _render_migration(migration: Migration, cluster: str) -> str:
    rendered: list[str] = []
    for text in split_statements(migration.sql):
        try:
            rendered.extend(render_statement(Statement(text), cluster))
        except ClusterRenderError as exc:
            raise ClusterRenderError(f"{migration.name}: {exc}") from None
    header = (
        f"-- {migration.name} for the ClickHouse cluster {cluster} (segwatch.clickhouse.cluster)\n"
    )
    return header + "".join(f"{statement};\n\n" for statement in rendered)
