"""docs/tables.md: every SQL block returns rows on the demo's data; every table is documented.

The blocks run on a copy of the store ``segwatch demo`` fills (tests/conftest.py's
``demo_store``), read-only (``readonly=1``). The demo sends no labels, so the
copy gets labels for a tenth of the fraud predictions first: the label queries
must return rows too.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.store import open_client, parse_dsn

DOC = Path(__file__).resolve().parents[1] / "docs" / "tables.md"

LABELS = """
INSERT INTO ml_labels
    (timestamp, model_name, prediction_id, numbers, strings, trace_id, service_name)
SELECT timestamp + INTERVAL 1 HOUR, model_name, prediction_id, map('label.amount_lost', 0.0),
       map('label.is_fraud', if(numbers['output.score'] >= 0.5, 'true', 'false')), '', 'payments'
FROM ml_model_calls
WHERE model_name = 'fraud' AND prediction_id != '' AND cityHash64(prediction_id) % 10 = 0
"""

CLAIM = """
INSERT INTO segwatch_leases (key, holder)
VALUES ('claim:detector:psi_drift:2026-01-01T00:00:00+00:00', 'test-host:1:scheduler')
"""
"""``segwatch demo`` runs its detectors by hand, which claims no window; a scheduler would."""

TABLES_WITHOUT_COLUMN_LISTS = {
    "otel_traces_trace_id_ts",
    "otel_traces_trace_id_ts_mv",
}
"""The OTel Collector ``clickhouseexporter``'s trace-id lookup table and its view,
described (with their columns) in the ``otel_traces`` section, not in sections of
their own."""


def sql_blocks() -> list[tuple[int, str]]:
    """(line of the opening fence, text) of every ```sql block of the page."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1):
        if current is None and line.strip() == "```sql":
            current, start = [], number
        elif current is not None and line.strip() == "```":
            blocks.append((start, "\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"an unclosed block at line {start}"
    return blocks


def sections() -> dict[str, str]:
    """The text under each ``## `table` `` heading (and each table a heading names)."""
    found: dict[str, str] = {}
    parts = re.split(r"^## (.+)$", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        for table in re.findall(r"`(\w+)`", heading):
            found[table] = body
    return found


@pytest.fixture(scope="module")
def demo_copy(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("tables_doc") / "store"
    shutil.copytree(demo_store, copy, symlinks=True)  # the store links its tables relatively
    client = open_client(parse_dsn(f"chdb://{copy}"))
    try:
        client.command(LABELS)
        client.command(CLAIM)
    finally:
        client.close()
    return copy


def _columns(client: Client, table: str) -> list[str]:
    return [str(row[0]) for row in client.query(f"DESCRIBE TABLE {table}").result_rows]


def test_every_sql_block_returns_rows(demo_copy: Path) -> None:
    blocks = sql_blocks()
    assert len(blocks) >= 10
    client = open_client(parse_dsn(f"chdb://{demo_copy}"))
    try:
        for line, sql in blocks:
            rows = client.query(sql, settings={"readonly": 1}).result_rows
            assert rows, f"docs/tables.md:{line} returned no rows"
    finally:
        client.close()


def test_every_table_and_column_of_the_store_is_documented(demo_copy: Path) -> None:
    documented = sections()
    client = open_client(parse_dsn(f"chdb://{demo_copy}"))
    try:
        tables = [str(name) for (name,) in client.query("SHOW TABLES").result_rows]
        columns = {t: _columns(client, t) for t in tables}
    finally:
        client.close()
    assert len(tables) >= 12
    for table in tables:
        if table in TABLES_WITHOUT_COLUMN_LISTS:
            named = table in documented or f"`{table}`" in documented.get("otel_traces", "")
            assert named, f"docs/tables.md does not name {table} in the otel_traces section"
            continue
        assert table in documented, f"docs/tables.md has no section for {table}"
        missing = [c for c in columns[table] if f"`{c}`" not in documented[table]]
        assert not missing, f"docs/tables.md, {table}: columns not described: {missing}"


def test_the_sections_name_only_tables_the_store_has(demo_copy: Path) -> None:
    client = open_client(parse_dsn(f"chdb://{demo_copy}"))
    try:
        tables = {str(name) for (name,) in client.query("SHOW TABLES").result_rows}
    finally:
        client.close()
    stale = set(sections()) - tables - TABLES_WITHOUT_COLUMN_LISTS
    assert not stale, f"docs/tables.md documents tables the store lacks: {stale}"
