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
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from .migrate import Migration
from .sql_text import Token, split_statements, tokens
from .store import validate_identifier

__all__ = [
    "CO_LOCATED_VIEWS",
    "LOCAL_SUFFIX",
    "REPLICA_ARGUMENTS",
    "RUNNER_TABLES",
    "SHARDING_KEYS",
    "ClusterRenderError",
    "render_cluster_migrations",
]

LOCAL_SUFFIX: Final = "_local"
"""The local (Replicated) table of ``t`` is ``t`` + this; ``t`` is the Distributed one."""

REPLICA_ARGUMENTS: Final = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
"""The Keeper path and replica name every Replicated table gets, from the server's macros."""

_SEGMENT_KEY = (
    "cityHash64(model_name, model_version, model_stage, quantity, segment_dim, segment_value)"
)
_FINDING_KEY = (
    "cityHash64(detector, model_name, model_version, model_stage, segment_dim, segment_value, "
    "quantity)"
)
SHARDING_KEYS: Final[dict[str, str]] = {
    "ml_segment_aggregates": _SEGMENT_KEY,
    "ml_segment_aggregates_by_time": _SEGMENT_KEY,
    "ml_segment_rollup_5m": _SEGMENT_KEY,
    "ml_segment_rollup_1h": _SEGMENT_KEY,
    "ml_baseline_aggregates": (
        "cityHash64(baseline_name, model_name, model_version, quantity, segment_dim, segment_value)"
    ),
    "ml_model_calls": "cityHash64(model_name, if(prediction_id = '', span_id, prediction_id))",
    "ml_labels": "cityHash64(model_name, prediction_id)",
    "ml_anomalies": _FINDING_KEY,
    "ml_anomaly_events": _FINDING_KEY,
    "ml_incident_members": "cityHash64(model_name, incident_id)",  # an incident on one shard
    "ml_store_settings": "cityHash64(name)",
    # The exporter's tables: a trace's spans and its lookup row on one shard.
    "otel_traces": "cityHash64(TraceId)",
    "otel_traces_trace_id_ts": "cityHash64(TraceId)",
}
"""Each table's sharding key (see the module docstring). A migration creating a table
that is not here is refused: choose its key first."""

RUNNER_TABLES: Final = frozenset({"segwatch_leases"})
"""Tables the migration runner makes on the node it reaches before any migration: a
migration creating one is rendered as written (see the module docstring)."""

CO_LOCATED_VIEWS: Final = frozenset({"ml_labeled_calls"})
"""Views that join tables sharded alike: each shard runs them on its own rows."""

_COLUMN_CHANGES = frozenset({
    ("ADD", "COLUMN"), ("DROP", "COLUMN"), ("MODIFY", "COLUMN"), ("RENAME", "COLUMN"),
    ("COMMENT", "COLUMN"), ("MODIFY", "COMMENT"),
})  # fmt: skip
_SETTING_RENAMES = {"non_replicated_deduplication_window": "replicated_deduplication_window"}
_PARALLEL_COPY = " SETTINGS parallel_distributed_insert_select = 2"


class ClusterRenderError(ValueError):
    """A migration statement that has no safe cluster form (the message says why)."""


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
            rendered.extend(_render_statement(_Statement(text), cluster))
        except ClusterRenderError as exc:
            raise ClusterRenderError(f"{migration.name}: {exc}") from None
    header = (
        f"-- {migration.name} for the ClickHouse cluster {cluster} (segwatch.clickhouse.cluster)\n"
    )
    return header + "".join(f"{statement};\n\n" for statement in rendered)


class _Statement:
    """One statement's text and its significant tokens, with edits by token."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokens(text)

    def keywords(self, start: int, count: int) -> tuple[str, ...]:
        return tuple(token.keyword() for token in self.tokens[start : start + count])

    def after_if(self, index: int, words: tuple[str, ...]) -> tuple[int, str]:
        """(the index past ``IF [NOT] EXISTS`` at ``index``, that text) or (``index``, "")."""
        if self.keywords(index, len(words)) == words:
            return index + len(words), " ".join(words) + " "
        return index, ""

    def name_at(self, index: int) -> str:
        """The unqualified table name at ``index``; a ``db.table`` name is refused."""
        if index >= len(self.tokens) or self.tokens[index].kind not in ("word", "ident"):
            raise ClusterRenderError(f"expected a table name in: {self.text[:80]}")
        if index + 1 < len(self.tokens) and self.tokens[index + 1].text == ".":
            raise ClusterRenderError(
                f"names qualified with a database are not rendered: {self.text[:80]}"
            )
        return _unquoted(self.tokens[index])

    def find(self, keyword: str, start: int = 0) -> int | None:
        """The index of the first ``keyword`` outside brackets from ``start``, if any."""
        for index in range(start, len(self.tokens)):
            token = self.tokens[index]
            if token.depth == 0 and token.keyword() == keyword:
                return index
        return None

    def closing(self, index: int) -> int:
        """The index of the bracket closing the one opened at ``index``."""
        depth = self.tokens[index].depth
        for end in range(index + 1, len(self.tokens)):
            if self.tokens[end].depth == depth and self.tokens[end].text in ")]":
                return end
        raise ClusterRenderError(f"unbalanced brackets in: {self.text[:80]}")

    def span(self, first: int, last: int) -> tuple[int, int]:
        """The text offsets from token ``first`` to the end of token ``last``."""
        end = self.tokens[last]
        return self.tokens[first].start, end.start + len(end.text)

    def edited(self, edits: list[tuple[int, int, str]]) -> str:
        """The text with each (start, end, replacement) applied; edits must not overlap."""
        text = self.text
        for start, end, replacement in sorted(edits, reverse=True):
            text = text[:start] + replacement + text[end:]
        return text

    def replace_token(self, index: int, replacement: str) -> tuple[int, int, str]:
        return (*self.span(index, index), replacement)

    def comment(self) -> str:
        """`` COMMENT '...'`` when the statement ends with a table's (or view's) comment."""
        last = self.tokens[-2:]
        if len(last) == 2 and last[0].depth == 0 and last[0].keyword() == "COMMENT":
            return f" COMMENT {last[1].text}" if last[1].kind == "string" else ""
        return ""


def _unquoted(token: Token) -> str:
    return token.text[1:-1] if token.kind == "ident" else token.text


def _render_statement(statement: _Statement, cluster: str) -> list[str]:
    kind = statement.keywords(0, 3)
    if kind[:2] == ("CREATE", "TABLE"):
        return _create_table(statement, cluster)
    if kind[:2] == ("CREATE", "VIEW"):
        return _create_view(statement, cluster)
    if kind == ("CREATE", "MATERIALIZED", "VIEW"):
        return _create_materialized_view(statement, cluster)
    if kind[:2] == ("ALTER", "TABLE"):
        return _alter_table(statement, cluster)
    if kind[:2] == ("TRUNCATE", "TABLE"):
        return [_on_local_tables(statement, cluster, statement.after_if(2, ("IF", "EXISTS"))[0], 1)]
    if kind[:2] == ("EXCHANGE", "TABLES"):
        return [_exchange(statement, cluster)]
    if kind[:2] in (("DROP", "TABLE"), ("DROP", "VIEW")):
        return _drop(statement, cluster)
    if kind[:2] == ("INSERT", "INTO"):
        return [_insert(statement)]
    raise ClusterRenderError(f"no cluster form for this kind of statement: {statement.text[:80]}")


def _sharding_key(table: str) -> str:
    if table not in SHARDING_KEYS:
        raise ClusterRenderError(
            f"table {table} has no sharding key: add one to "
            "segwatch.clickhouse.cluster.SHARDING_KEYS (see that module's docstring)"
        )
    return SHARDING_KEYS[table]


def _distributed(
    table: str, cluster: str, if_not_exists: str, key: str | None, comment: str
) -> str:
    """The Distributed table ``table`` over ``table_local`` on every node of ``cluster``."""
    local = table + LOCAL_SUFFIX
    arguments = f"{cluster}, currentDatabase(), {local}" + (f", {key}" if key else "")
    return (
        f"CREATE TABLE {if_not_exists}{table} ON CLUSTER {cluster} AS {local}\n"
        f"ENGINE = Distributed({arguments}){comment}"
    )


def _create_table(statement: _Statement, cluster: str) -> list[str]:
    """``CREATE TABLE t (...) ENGINE = E ...`` or ``CREATE TABLE t AS s ENGINE = E ...``."""
    index, if_not_exists = statement.after_if(2, ("IF", "NOT", "EXISTS"))
    table = statement.name_at(index)
    if table in RUNNER_TABLES:
        return [statement.text]  # on the node the runner reaches, where the runner made it
    key = _sharding_key(table)
    edits = [statement.replace_token(index, f"{table}{LOCAL_SUFFIX} ON CLUSTER {cluster}")]
    if statement.keywords(index + 1, 1) == ("AS",):
        source = statement.name_at(index + 2)
        if statement.keywords(index + 2, 1) == ("SELECT",) or source not in SHARDING_KEYS:
            raise ClusterRenderError(f"CREATE TABLE {table} AS must copy a known table")
        edits.append(statement.replace_token(index + 2, source + LOCAL_SUFFIX))
    edits.append(_replicated_engine(statement, table))
    edits.extend(_renamed_settings(statement))
    return [
        statement.edited(edits),
        _distributed(table, cluster, if_not_exists, key, statement.comment()),
    ]


def _replicated_engine(statement: _Statement, table: str) -> tuple[int, int, str]:
    """The edit making the table's MergeTree-family engine its Replicated counterpart."""
    engine = statement.find("ENGINE")
    if engine is None:
        raise ClusterRenderError(
            f"CREATE TABLE {table} names no ENGINE: on a cluster it would copy the source's "
            "Keeper path"
        )
    name = engine + 2 if statement.tokens[engine + 1].text == "=" else engine + 1
    engine_name = statement.tokens[name].text
    if not engine_name.endswith("MergeTree") or engine_name.startswith("Replicated"):
        raise ClusterRenderError(f"table {table}: engine {engine_name} is not a plain MergeTree")
    last, arguments = name, ""
    if name + 1 < len(statement.tokens) and statement.tokens[name + 1].text == "(":
        last = statement.closing(name + 1)
        if last > name + 2:
            start, end = statement.span(name + 2, last - 1)
            arguments = ", " + statement.text[start:end]
    start, end = statement.span(name, last)
    return start, end, f"Replicated{engine_name}({REPLICA_ARGUMENTS}{arguments})"


def _renamed_settings(statement: _Statement) -> Iterator[tuple[int, int, str]]:
    for index, token in enumerate(statement.tokens):
        if token.kind == "word" and token.text in _SETTING_RENAMES:
            yield statement.replace_token(index, _SETTING_RENAMES[token.text])


def _localized(statement: _Statement, start: int) -> Iterator[tuple[int, int, str]]:
    """Edits pointing each known table or co-located view named from ``start`` at its local one."""
    known = SHARDING_KEYS.keys() | CO_LOCATED_VIEWS
    for index in range(start, len(statement.tokens)):
        token = statement.tokens[index]
        qualified = index > 0 and statement.tokens[index - 1].text == "."
        if token.kind in ("word", "ident") and _unquoted(token) in known and not qualified:
            yield statement.replace_token(index, _unquoted(token) + LOCAL_SUFFIX)


def _tables_read(statement: _Statement, start: int) -> set[str]:
    """The known tables a statement names from ``start`` on (the tables its SELECT reads)."""
    known = SHARDING_KEYS.keys()
    return {
        _unquoted(token) for token in statement.tokens[start:]
        if token.kind in ("word", "ident") and _unquoted(token) in known
    }  # fmt: skip


def _create_view(statement: _Statement, cluster: str) -> list[str]:
    """A co-located view runs on each shard's local tables, under a Distributed table."""
    index, if_not_exists = statement.after_if(2, ("IF", "NOT", "EXISTS"))
    view = statement.name_at(index)
    if view in CO_LOCATED_VIEWS:
        edits = [statement.replace_token(index, f"{view}{LOCAL_SUFFIX} ON CLUSTER {cluster}")]
        edits.extend(_localized(statement, index + 1))
        local_view = statement.edited(edits)
        return [local_view, _distributed(view, cluster, if_not_exists, None, statement.comment())]
    if _joins(statement):
        raise ClusterRenderError(
            f"view {view} joins tables: over Distributed tables that join is refused; shard its "
            "tables alike and list it in segwatch.clickhouse.cluster.CO_LOCATED_VIEWS"
        )
    return [statement.edited([statement.replace_token(index, f"{view} ON CLUSTER {cluster}")])]


def _joins(statement: _Statement) -> bool:
    """True if the statement joins tables (``ARRAY JOIN`` unfolds arrays, it joins none)."""
    return any(
        token.keyword() == "JOIN" and statement.keywords(index - 1, 1) != ("ARRAY",)
        for index, token in enumerate(statement.tokens)
    )


def _create_materialized_view(statement: _Statement, cluster: str) -> list[str]:
    """``CREATE MATERIALIZED VIEW v TO target AS SELECT ... FROM source``, on each shard."""
    index, _ = statement.after_if(3, ("IF", "NOT", "EXISTS"))
    view = statement.name_at(index)
    if statement.keywords(index + 1, 1) != ("TO",):
        raise ClusterRenderError(f"materialized view {view} needs TO a table of the migrations")
    target = statement.name_at(index + 2)
    sources = _tables_read(statement, index + 3)
    if {_sharding_key(target)} != {_sharding_key(source) for source in sources}:
        raise ClusterRenderError(
            f"materialized view {view}: {target} and what it reads must share a sharding key"
        )
    edits = [statement.replace_token(index, f"{view} ON CLUSTER {cluster}")]
    edits.extend(_localized(statement, index + 2))
    return [statement.edited(edits)]


def _alter_table(statement: _Statement, cluster: str) -> list[str]:
    """ALTER the local table; column and comment changes the Distributed one too."""
    table = statement.name_at(2)
    _sharding_key(table)
    changes = {command in _COLUMN_CHANGES for command in _commands(statement, 3)}
    if changes == {True, False}:
        raise ClusterRenderError(
            f"ALTER TABLE {table}: put column changes and other changes in separate statements"
        )
    settings = list(_renamed_settings(statement))
    local = _on_local_tables(statement, cluster, 2, 1, settings)
    if changes == {True}:
        distributed = statement.replace_token(2, f"{table} ON CLUSTER {cluster}")
        return [local, statement.edited([distributed, *settings])]
    return [local]


def _commands(statement: _Statement, start: int) -> list[tuple[str, ...]]:
    """The first two keywords of each comma-separated command of an ALTER from ``start``."""
    firsts, expecting = [], True
    for index in range(start, len(statement.tokens)):
        if expecting:
            firsts.append(statement.keywords(index, 2))
        expecting = statement.tokens[index].depth == 0 and statement.tokens[index].text == ","
    return firsts


def _on_local_tables(
    statement: _Statement,
    cluster: str,
    index: int,
    count: int,
    extra: list[tuple[int, int, str]] | None = None,
) -> str:
    """The statement on the local tables named at ``index`` (``count`` names, ``AND`` between)."""
    edits = list(extra or [])
    for position in range(index, index + 2 * count, 2):
        table = statement.name_at(position)
        _sharding_key(table)
        last = position == index + 2 * (count - 1)
        suffix = f" ON CLUSTER {cluster}" if last else ""
        edits.append(statement.replace_token(position, f"{table}{LOCAL_SUFFIX}{suffix}"))
    return statement.edited(edits)


def _exchange(statement: _Statement, cluster: str) -> str:
    """``EXCHANGE TABLES a AND b``: the local tables swap; the Distributed names follow them."""
    if statement.keywords(3, 1) != ("AND",):
        raise ClusterRenderError(f"cannot read: {statement.text[:80]}")
    return _on_local_tables(statement, cluster, 2, 2)


def _drop(statement: _Statement, cluster: str) -> list[str]:
    """DROP a table (its Distributed and local tables), a co-located view (both) or a view."""
    kind = statement.keywords(1, 1)[0]
    index, if_exists = statement.after_if(2, ("IF", "EXISTS"))
    name = statement.name_at(index)
    if statement.keywords(index + 1, 2) not in ((), ("SYNC",)):
        raise ClusterRenderError(f"cannot read: {statement.text[:80]}")
    dropped = f"DROP {{kind}} {if_exists}{{name}} ON CLUSTER {cluster} SYNC"
    if kind == "TABLE" and name in SHARDING_KEYS:
        local_kind = "TABLE"
    elif kind == "VIEW" and name in CO_LOCATED_VIEWS:
        local_kind = "VIEW"
    else:
        return [dropped.format(kind=kind, name=name)]
    return [
        dropped.format(kind="TABLE", name=name),
        dropped.format(kind=local_kind, name=name + LOCAL_SUFFIX),
    ]


def _insert(statement: _Statement) -> str:
    """An INSERT through the Distributed names; a copy between them runs on each shard."""
    target = statement.name_at(2)
    select = statement.find("SELECT")
    if select is None:
        return statement.text  # VALUES: the Distributed table shards the rows
    sources = _tables_read(statement, select)
    if not sources:
        return statement.text  # a SELECT of no table of ours: the Distributed table shards it
    if {_sharding_key(target)} != {_sharding_key(source) for source in sources}:
        raise ClusterRenderError(
            f"INSERT INTO {target} SELECT: the tables must share a sharding key, or each "
            "shard's copy would keep rows on the wrong shard"
        )
    if statement.find("SETTINGS") is not None:
        raise ClusterRenderError(f"INSERT INTO {target}: already has SETTINGS")
    return statement.text + _PARALLEL_COPY
