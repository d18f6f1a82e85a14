"""Each kind of migration statement in its cluster form (see :mod:`segwatch.clickhouse.cluster`)."""

from __future__ import annotations

from collections.abc import Iterator

from .keys import (
    CO_LOCATED_VIEWS,
    LOCAL_SUFFIX,
    REPLICA_ARGUMENTS,
    RUNNER_TABLES,
    SHARDING_KEYS,
    sharding_key,
)
from .statement import ClusterRenderError, Statement, unquoted

__all__ = ["render_statement"]

_COLUMN_CHANGES = frozenset({
    ("ADD", "COLUMN"), ("DROP", "COLUMN"), ("MODIFY", "COLUMN"), ("RENAME", "COLUMN"),
    ("COMMENT", "COLUMN"), ("MODIFY", "COMMENT"),
})  # fmt: skip
_SETTING_RENAMES = {"non_replicated_deduplication_window": "replicated_deduplication_window"}
_PARALLEL_COPY = " SETTINGS parallel_distributed_insert_select = 2"


def render_statement(statement: Statement, cluster: str) -> list[str]:
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


def _create_table(statement: Statement, cluster: str) -> list[str]:
    """``CREATE TABLE t (...) ENGINE = E ...`` or ``CREATE TABLE t AS s ENGINE = E ...``."""
    index, if_not_exists = statement.after_if(2, ("IF", "NOT", "EXISTS"))
    table = statement.name_at(index)
    if table in RUNNER_TABLES:
        return [statement.text]  # on the node the runner reaches, where the runner made it
    key = sharding_key(table)
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


def _replicated_engine(statement: Statement, table: str) -> tuple[int, int, str]:
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


def _renamed_settings(statement: Statement) -> Iterator[tuple[int, int, str]]:
    for index, token in enumerate(statement.tokens):
        if token.kind == "word" and token.text in _SETTING_RENAMES:
            yield statement.replace_token(index, _SETTING_RENAMES[token.text])


def _localized(statement: Statement, start: int) -> Iterator[tuple[int, int, str]]:
    """Edits pointing each known table or co-located view named from ``start`` at its local one."""
    known = SHARDING_KEYS.keys() | CO_LOCATED_VIEWS
    for index in range(start, len(statement.tokens)):
        token = statement.tokens[index]
        qualified = index > 0 and statement.tokens[index - 1].text == "."
        if token.kind in ("word", "ident") and unquoted(token) in known and not qualified:
            yield statement.replace_token(index, unquoted(token) + LOCAL_SUFFIX)


def _tables_read(statement: Statement, start: int) -> set[str]:
    """The known tables a statement names from ``start`` on (the tables its SELECT reads)."""
    known = SHARDING_KEYS.keys()
    return {
        unquoted(token) for token in statement.tokens[start:]
        if token.kind in ("word", "ident") and unquoted(token) in known
    }  # fmt: skip


def _create_view(statement: Statement, cluster: str) -> list[str]:
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
            "tables alike and list it in segwatch.clickhouse.cluster.keys.CO_LOCATED_VIEWS"
        )
    return [statement.edited([statement.replace_token(index, f"{view} ON CLUSTER {cluster}")])]


def _joins(statement: Statement) -> bool:
    """True if the statement joins tables (``ARRAY JOIN`` unfolds arrays, it joins none)."""
    return any(
        token.keyword() == "JOIN" and statement.keywords(index - 1, 1) != ("ARRAY",)
        for index, token in enumerate(statement.tokens)
    )


def _create_materialized_view(statement: Statement, cluster: str) -> list[str]:
    """``CREATE MATERIALIZED VIEW v TO target AS SELECT ... FROM source``, on each shard."""
    index, _ = statement.after_if(3, ("IF", "NOT", "EXISTS"))
    view = statement.name_at(index)
    if statement.keywords(index + 1, 1) != ("TO",):
        raise ClusterRenderError(f"materialized view {view} needs TO a table of the migrations")
    target = statement.name_at(index + 2)
    sources = _tables_read(statement, index + 3)
    if {sharding_key(target)} != {sharding_key(source) for source in sources}:
        raise ClusterRenderError(
            f"materialized view {view}: {target} and what it reads must share a sharding key"
        )
    edits = [statement.replace_token(index, f"{view} ON CLUSTER {cluster}")]
    edits.extend(_localized(statement, index + 2))
    return [statement.edited(edits)]


def _alter_table(statement: Statement, cluster: str) -> list[str]:
    """ALTER the local table; column and comment changes the Distributed one too."""
    table = statement.name_at(2)
    sharding_key(table)
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


def _commands(statement: Statement, start: int) -> list[tuple[str, ...]]:
    """The first two keywords of each comma-separated command of an ALTER from ``start``."""
    firsts, expecting = [], True
    for index in range(start, len(statement.tokens)):
        if expecting:
            firsts.append(statement.keywords(index, 2))
        expecting = statement.tokens[index].depth == 0 and statement.tokens[index].text == ","
    return firsts


def _on_local_tables(
    statement: Statement,
    cluster: str,
    index: int,
    count: int,
    extra: list[tuple[int, int, str]] | None = None,
) -> str:
    """The statement on the local tables named at ``index`` (``count`` names, ``AND`` between)."""
    edits = list(extra or [])
    for position in range(index, index + 2 * count, 2):
        table = statement.name_at(position)
        sharding_key(table)
        last = position == index + 2 * (count - 1)
        suffix = f" ON CLUSTER {cluster}" if last else ""
        edits.append(statement.replace_token(position, f"{table}{LOCAL_SUFFIX}{suffix}"))
    return statement.edited(edits)


def _exchange(statement: Statement, cluster: str) -> str:
    """``EXCHANGE TABLES a AND b``: the local tables swap; the Distributed names follow them."""
    if statement.keywords(3, 1) != ("AND",):
        raise ClusterRenderError(f"cannot read: {statement.text[:80]}")
    return _on_local_tables(statement, cluster, 2, 2)


def _drop(statement: Statement, cluster: str) -> list[str]:
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


def _insert(statement: Statement) -> str:
    """An INSERT through the Distributed names; a copy between them runs on each shard."""
    target = statement.name_at(2)
    select = statement.find("SELECT")
    if select is None:
        return statement.text  # VALUES: the Distributed table shards the rows
    sources = _tables_read(statement, select)
    if not sources:
        return statement.text  # a SELECT of no table of ours: the Distributed table shards it
    if {sharding_key(target)} != {sharding_key(source) for source in sources}:
        raise ClusterRenderError(
            f"INSERT INTO {target} SELECT: the tables must share a sharding key, or each "
            "shard's copy would keep rows on the wrong shard"
        )
    if statement.find("SETTINGS") is not None:
        raise ClusterRenderError(f"INSERT INTO {target}: already has SETTINGS")
    return statement.text + _PARALLEL_COPY
