"""A client that counts the statements it runs: a test that hands a detector group a
helper session can then check the group used it."""

from __future__ import annotations

from typing import Any

_STATEMENTS = ("query", "command", "insert", "raw_query", "raw_insert")


class CountingClient:
    """Wraps a clickhouse-connect client; ``statements`` counts its queries, commands and
    inserts, and ``settings`` holds each query's text and settings (from any thread: they
    are only read once the work is done)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.statements = 0
        self.settings: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in _STATEMENTS:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.statements += 1
            if name == "query":
                self.settings.append((str(args[0] if args else ""), kwargs.get("settings") or {}))
            return attribute(*args, **kwargs)

        return counted
