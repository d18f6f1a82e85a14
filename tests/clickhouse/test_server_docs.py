"""Every SQL statement in docs/clickhouse-server.md, on the real embedded engine.

The embedded engine runs what it can: the statements on the segwatch database
and its tables run against a migrated store. It has no access management (users,
roles, grants) and no cluster, so those statements cannot run here: each is
executed anyway and must be refused for that reason alone, then parsed by the
engine (``formatQuery``), and the privileges and tables a grant names are
looked up in the engine's own lists.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError

from segwatch.clickhouse.cluster import render_cluster_migrations
from segwatch.clickhouse.migrate import load_migrations
from segwatch.clickhouse.sql_text import split_statements, tokens
from segwatch.clickhouse.store import error_code

DOC = Path(__file__).resolve().parents[2] / "docs" / "clickhouse-server.md"
TEXT = DOC.read_text(encoding="utf-8")
SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", TEXT, flags=re.DOTALL)
STATEMENTS = [statement for block in SQL_BLOCKS for statement in split_statements(block)]

_ACCESS = ("CREATE USER", "CREATE ROLE", "CREATE SETTINGS PROFILE", "ALTER ROLE", "ALTER USER",
           "GRANT", "REVOKE", "SHOW GRANTS")  # fmt: skip
_REFUSED_HERE = {
    497: "ACCESS_DENIED (access management is off)",
    511: "UNKNOWN_ROLE (the role could not be created)",
    192: "UNKNOWN_USER (the user could not be created)",
    180: "THERE_IS_NO_PROFILE (the profile could not be created)",
    701: "CLUSTER_DOESNT_EXIST",
}


def _needs_a_server(statement: str) -> bool:
    words = " ".join(token.keyword() for token in tokens(statement)[:4])
    return words.startswith(_ACCESS) or " ON CLUSTER " in f" {' '.join(statement.split())} "


def _formatted(client, statement: str) -> str:  # type: ignore[no-untyped-def]
    rows = client.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows
    return " ".join(str(rows[0][0]).split())


def test_the_page_has_its_sql() -> None:
    assert len(STATEMENTS) >= 20
    kinds = {" ".join(s.split()[:2]).upper() for s in STATEMENTS}
    assert {"CREATE USER", "CREATE ROLE", "CREATE DATABASE", "SELECT NAME,"} <= kinds


def test_every_statement_parses(client) -> None:  # type: ignore[no-untyped-def]
    for statement in STATEMENTS:
        assert _formatted(client, statement), statement


def test_what_the_engine_can_run_runs(client) -> None:  # type: ignore[no-untyped-def]
    runnable = [s for s in STATEMENTS if not _needs_a_server(s)]
    assert len(runnable) >= 3
    for statement in runnable:
        client.command(statement)
    ttl = client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = 'segwatch' "
        "AND engine_full LIKE '% TTL %'"
    ).result_rows
    assert "ml_model_calls" in [name for name, _ in ttl]  # the page's query finds the 30 days


def test_what_needs_a_server_is_refused_here_only_for_that(client) -> None:  # type: ignore[no-untyped-def]
    needing = [s for s in STATEMENTS if _needs_a_server(s)]
    assert len(needing) >= 10
    for statement in needing:
        with pytest.raises(ClickHouseError) as refused:
            client.command(statement)
        message = str(refused.value)
        # A Distributed table copies the structure of the local table the ON CLUSTER
        # statement before it would have made on every node.
        missing_local = re.search(r"Table segwatch\.\w+_local does not exist", message)
        assert error_code(refused.value) in _REFUSED_HERE or missing_local, (statement, message)


def _grants(statement: str) -> tuple[list[str], str] | None:
    """(privileges, object) of ``GRANT privilege, ... ON object TO ...``; None for a role grant."""
    match = re.match(r"GRANT (?:ON CLUSTER \w+ )?(.+?) ON (\S+) TO ", " ".join(statement.split()))
    if not match:
        return None
    return [p.strip() for p in match.group(1).split(",")], match.group(2)


def test_grants_name_real_privileges_and_tables(client) -> None:  # type: ignore[no-untyped-def]
    known = set()
    for privilege, aliases in client.query(
        "SELECT privilege, aliases FROM system.privileges"
    ).result_rows:
        known |= {privilege, *aliases}
    tables = {
        f"{database}.{name}"
        for database, name in client.query("SELECT database, name FROM system.tables").result_rows
    }
    grants = [g for g in map(_grants, STATEMENTS) if g is not None]
    assert len(grants) >= 5
    for privileges, target in grants:
        assert set(privileges) <= known, privileges
        assert target in ("*.*", "segwatch.*") or target in tables, target


def test_every_role_a_user_gets_is_created_and_granted_something() -> None:
    flat = [" ".join(s.split()) for s in STATEMENTS]
    created = {m.group(1) for s in flat if (m := re.match(r"CREATE ROLE IF NOT EXISTS (\w+)", s))}
    given = {m.group(1) for s in flat if (m := re.match(r"GRANT (\w+) TO \w+$", s))}
    granted_to = {
        role.strip() for s in flat if (m := re.match(r"GRANT .+ ON \S+ TO (.+)$", s))
        for role in m.group(1).split(",")
    }  # fmt: skip
    assert created == {"segwatch_migrator", "segwatch_writer", "segwatch_reader"}
    assert given == created
    assert created <= granted_to


def _without_comments(formatted: str) -> str:
    return re.sub(r" COMMENT '(?:[^'\\]|\\.)*'", "", formatted)


def test_the_cluster_excerpt_is_what_the_renderer_writes(client) -> None:  # type: ignore[no-untyped-def]
    (block,) = [b for b in SQL_BLOCKS if b.startswith("-- rendered: ")]
    name = block.splitlines()[0].removeprefix("-- rendered: ").strip()
    shipped = next(m for m in load_migrations() if m.name == name)
    (rendered,) = render_cluster_migrations([shipped], "segwatch_cluster")
    expected = [_without_comments(_formatted(client, s)) for s in split_statements(rendered.sql)]
    shown = [_formatted(client, s) for s in split_statements(block)]
    assert shown == expected


def test_the_macros_example_is_xml_with_the_macros_the_paths_use() -> None:
    (block,) = re.findall(r"```xml\n(.*?)```", TEXT, flags=re.DOTALL)
    macros = ET.fromstring(block).find("macros")
    assert macros is not None
    assert {child.tag for child in macros} == {"shard", "replica"}


def test_profiles_set_real_settings(client) -> None:  # type: ignore[no-untyped-def]
    known = {name for (name,) in client.query("SELECT name FROM system.settings").result_rows}
    named = set()
    for statement in STATEMENTS:
        flat = " ".join(statement.split())
        if flat.startswith("CREATE SETTINGS PROFILE"):
            listed = flat.split(" SETTINGS ")[-1]  # past CREATE SETTINGS PROFILE name
            named |= {item.split()[0] for item in listed.split(", ")}
    assert {"readonly", "async_insert", "distributed_foreground_insert"} <= named
    assert named <= known
