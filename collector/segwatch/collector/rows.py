"""TableRows: rows for one ClickHouse table, column by column, ready for one insert."""

from __future__ import annotations

from typing import Any

__all__ = ["TableRows"]


class TableRows:
    """Column-oriented rows of ``table``; ``columns[name]`` lists one column's values.

    Subclasses fix the table and its column order; the exporter inserts any of
    them the same way.
    """

    table: str = ""
    column_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in self.column_names}

    def __len__(self) -> int:
        return len(self.columns[self.column_names[0]])

    def extend(self, other: TableRows) -> None:
        if other.table != self.table:
            raise ValueError(f"cannot add rows of {other.table} to {self.table}")
        for name, values in other.columns.items():
            self.columns[name].extend(values)

    def column_data(self) -> list[list[Any]]:
        return [self.columns[name] for name in self.column_names]

    def empty(self) -> TableRows:
        """A new, empty instance for the same table."""
        return type(self)()
