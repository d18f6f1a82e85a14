"""DSN parsing and the embedded store's lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from segwatch.clickhouse.store import (
    StoreLockedError,
    open_client,
    parse_dsn,
    validate_identifier,
)


def test_dsn_forms() -> None:
    relative = parse_dsn("chdb://./data")
    assert relative.embedded and relative.path is not None and relative.path.endswith("/data")
    assert parse_dsn("chdb:///var/lib/sw").path == "/var/lib/sw"
    assert parse_dsn("chdb://memory").in_memory
    server = parse_dsn("https://user:secret@ch.example:8443/analytics")
    assert not server.embedded and server.database == "analytics"
    assert parse_dsn("http://localhost:8123").database == "segwatch"


@pytest.mark.parametrize(
    "dsn, message",
    [
        ("postgres://x", "scheme must be chdb, http or https"),
        ("nothing", "must look like"),
        ("http://host:8123/bad-name", "must match"),
        ("chdb://./x?opt=1", "takes no options"),
    ],
)
def test_bad_dsns_are_refused_with_a_reason(dsn: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dsn(dsn)


def test_identifiers_are_validated() -> None:
    assert validate_identifier("segwatch_1") == "segwatch_1"
    for bad in ["", "1abc", "a-b", "a; DROP TABLE x", "a" * 65]:
        with pytest.raises(ValueError):
            validate_identifier(bad)


def test_a_second_process_gets_a_clear_locked_error(store_dsn: str) -> None:
    client = open_client(parse_dsn(store_dsn))
    try:
        code = (
            "import sys\n"
            "from segwatch.clickhouse.store import open_client, parse_dsn, StoreLockedError\n"
            "try:\n"
            f"    open_client(parse_dsn({store_dsn!r}))\n"
            "except StoreLockedError as exc:\n"
            "    print(exc); sys.exit(3)\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 3, result.stderr
        assert "open in another process" in result.stdout
    finally:
        client.close()
    assert StoreLockedError.__mro__[1].__name__ == "StoreError"
