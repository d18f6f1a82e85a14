"""TableRows: rows for one ClickHouse table, column by column, ready for one insert."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from clickhouse_connect.driver.client import Client

from .embedded_insert import stream_insert
from .native import native_chunks

__all__ = ["MERGE_LATER", "TableRows", "insert_blocks"]


class TableRows:
    """Column-oriented rows of ``table``; ``columns[name]`` holds one column's values.

    Subclasses fix the table, its column order and the ClickHouse type of each
    column (as the table declares it). A column is a list, a numpy array, or
    one of :mod:`.native`'s columnar shapes (:class:`~.native.Coded`,
    :class:`~.native.MapColumn`, :class:`~.native.ArrayColumn`); all of them
    index row by row, so tests read any of them the same way.
    """

    table: str = ""
    column_names: tuple[str, ...] = ()
    column_types: tuple[str, ...] = ()
    insert_settings: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.columns: dict[str, Any] = {name: [] for name in self.column_names}

    def __len__(self) -> int:
        return len(self.columns[self.column_names[0]])

    def native(self) -> bytes:
        """These rows as one ClickHouse Native block."""
        return b"".join(self.native_chunks())

    def native_chunks(self) -> Iterator[bytes]:
        """The Native block in pieces, encoded as they are asked for (lengths checked now)."""
        return native_chunks(
            self.column_names, self.column_types, [self.columns[n] for n in self.column_names]
        )

    def insert_into(self, client: Client) -> None:
        """Insert these rows (nothing when there are none)."""
        if len(self):
            insert_blocks(
                client, self.table, self.column_names, [self.native_chunks()], self.insert_settings
            )


# Rows that ClickHouse merges (AggregatingMergeTree) are merged when read and in
# the background anyway; merging them again while inserting took a large share of
# the insert time for our aggregate rows, whose keys are already unique per block.
MERGE_LATER = {"optimize_on_insert": 0}

# Every insert synchronous, whatever the server's default (async_insert is 1 by default
# in recent ClickHouse, the embedded engine included): an insert that returned is in a
# part, and its deduplication token counts (async inserts ignore tokens unless
# async_insert_deduplicate is on). A collector's inserts are batched already.
SYNCHRONOUS = {"async_insert": 0}


def insert_blocks(
    client: Client,
    table: str,
    column_names: Iterable[str],
    blocks: Iterable[bytes | Iterable[bytes]],
    settings: dict[str, Any] | None = None,
) -> None:
    """One ``INSERT ... FORMAT Native`` of several blocks (of the same columns).

    A block is its bytes or its pieces (:meth:`TableRows.native_chunks`); the
    pieces are streamed to the store (the embedded engine's streaming insert, a
    chunked request body over HTTP), never joined.
    """
    pieces = (p for b in blocks for p in ([b] if isinstance(b, bytes) else b))  # a Generator
    settings = {**SYNCHRONOUS, **(settings or {})}
    if not stream_insert(client, table, column_names, pieces, settings):
        client.raw_insert(table, list(column_names), pieces, fmt="Native", settings=settings)
