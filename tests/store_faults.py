"""Fault-injecting wrappers around the real store client.

The embedded engine cannot be made to fail on cue, so these pass every call
to the real client except the inserts they are told to fail. Tests that use
them say so in their docstrings.
"""

from __future__ import annotations

import threading
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError


class FailOnce:
    """Passes everything to the real client, except the first insert into ``table``."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table
        self.failed = 0

    def raw_insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        if table == self._table and not self.failed:
            self.failed += 1
            raise ConnectionError("the store went away mid-flush")
        return self._client.raw_insert(table, *args, **kwargs)


class Outage:
    """The real client, behind a switch that makes every insert fail while the store is down.

    Other queries pass (the exporter's ``SELECT 1`` probe answers): the inserts fail
    with a connection error, which must count as an outage, never as bad data.
    """

    def __init__(self, client: Any, down: bool = True) -> None:
        self._client = client
        self.down = down
        self.refused = 0

    def command(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.command(*args, **kwargs)

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            self.refused += 1
            raise ConnectionError("the store is down")
        return self._client.raw_insert(*args, **kwargs)


class Hung(Outage):
    """An :class:`Outage` whose inserts hang until :meth:`release`, then fail while the
    store is down: a flush stays in flight meanwhile (``hung`` is set once one waits)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.hung = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        if not self._released.is_set():
            self.hung.set()
            self._released.wait(60)
        return super().raw_insert(*args, **kwargs)


class RefusesData:
    """The real client, except that inserts into ``table`` fail with a data error while
    ``refusing`` is set: the store answers everything else (a type mismatch, say)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table
        self.refusing = True
        self.refused = 0

    def command(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.command(*args, **kwargs)

    def raw_insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        if table == self._table and self.refusing:
            self.refused += 1
            raise DatabaseError(
                f"Code: 53. DB::Exception: Type mismatch in {table}. (TYPE_MISMATCH)"
            )
        return self._client.raw_insert(table, *args, **kwargs)
