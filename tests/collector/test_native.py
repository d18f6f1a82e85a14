"""Native-format blocks: what goes in comes back out of the real engine, for every table."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from segwatch.collector.aggregate.aggregator import AggregateRows
from segwatch.collector.decode.labels import LabelRows
from segwatch.collector.profile.profiles import BaselineRows
from segwatch.collector.store.call_rows import CallRows, _row_map
from segwatch.collector.store.native import (
    ArrayColumn,
    Coded,
    HexColumn,
    MapColumn,
    native_block,
    native_chunks,
)
from segwatch.collector.store.rows import insert_blocks


@pytest.mark.parametrize("rows_type", [AggregateRows, CallRows, LabelRows, BaselineRows])
def test_declared_types_are_the_tables_types(client, rows_type) -> None:  # type: ignore[no-untyped-def]
    described = {
        row[0]: row[1] for row in client.query(f"DESCRIBE TABLE {rows_type.table}").result_rows
    }
    declared = dict(zip(rows_type.column_names, rows_type.column_types, strict=True))
    assert declared == {name: described[name] for name in declared}


def test_every_shape_round_trips_through_the_engine(client) -> None:  # type: ignore[no-untyped-def]
    client.command(
        "CREATE TABLE shapes (i UInt64, f Float64, d DateTime('UTC'), t DateTime64(9, 'UTC'), "
        "s String, lc LowCardinality(String), hist Map(Int16, Float64), "
        "cats Map(LowCardinality(String), Float64), texts Map(String, String), "
        "ids Array(String), total SimpleAggregateFunction(sum, Float64)) "
        "ENGINE = MergeTree ORDER BY i"
    )
    names = ("i", "f", "d", "t", "s", "lc", "hist", "cats", "texts", "ids", "total")
    types = (
        "UInt64", "Float64", "DateTime('UTC')", "DateTime64(9, 'UTC')", "String",
        "LowCardinality(String)", "Map(Int16, Float64)", "Map(LowCardinality(String), Float64)",
        "Map(String, String)", "Array(String)", "SimpleAggregateFunction(sum, Float64)",
    )  # fmt: skip
    odd = "quote ' back \\ nul \x00 tab \t é 😀 " + "x" * 300  # a length past one varint byte
    columnar = [
        np.array([1, 2, 3], dtype=np.uint64),
        np.array([0.5, -math.inf, 1e300]),
        np.array([0, 60, 1_700_000_000]),
        np.array([1, 2, 1_700_000_000_123_456_789]),
        Coded(np.array([1, 0, 1]), ["", odd]),
        Coded(np.array([2, 2, 0]), ["a", "b", "c"]),
        MapColumn(
            np.array([2, 2, 3], dtype=np.uint64),
            np.array([-5, 7, 32767]),
            np.array([1.0, 2.5, 3.0]),
        ),
        MapColumn(
            np.array([0, 1, 2], dtype=np.uint64),
            Coded(np.array([0, 0]), ["k"]),
            np.array([4.0, 5.0]),
        ),
        MapColumn(np.array([1, 1, 1], dtype=np.uint64), [odd], [odd]),
        ArrayColumn(np.array([0, 2, 3], dtype=np.uint64), ["t1", "t2", odd]),
        np.array([1.0, 2.0, 3.0]),
    ]
    as_lists = [
        [4], [0.0], [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)], [5], ["plain"], ["z"],
        [{}], [{"k": 1.0, "j": 2.0}], [{}], [[]], [0.0],
    ]  # fmt: skip
    # One block streamed in pieces (as the exporter inserts), one as joined bytes.
    assert b"".join(native_chunks(names, types, columnar)) == native_block(names, types, columnar)
    insert_blocks(client, "shapes", names, [native_chunks(names, types, columnar),
                                            native_block(names, types, as_lists)])  # fmt: skip
    rows = client.query("SELECT * FROM shapes ORDER BY i").result_rows
    assert len(rows) == 4
    utc = dt.timezone.utc
    assert rows[0][:2] == (1, 0.5) and rows[1][1] == -math.inf and rows[2][1] == 1e300
    assert [r[2].replace(tzinfo=utc).timestamp() for r in rows[:3]] == [0, 60, 1_700_000_000]
    assert rows[3][2].replace(tzinfo=utc) == dt.datetime(2026, 1, 1, tzinfo=utc)
    assert [r[4] for r in rows] == [odd, "", odd, "plain"]
    assert [r[5] for r in rows] == ["c", "c", "a", "z"]
    assert [r[6] for r in rows] == [{-5: 1.0, 7: 2.5}, {}, {32767: 3.0}, {}]
    assert [r[7] for r in rows] == [{}, {"k": 4.0}, {"k": 5.0}, {"k": 1.0, "j": 2.0}]
    assert [r[8] for r in rows] == [{odd: odd}, {}, {}, {}]
    assert [r[9] for r in rows] == [[], ["t1", "t2"], [odd], []]


def test_columns_index_like_lists() -> None:
    column = MapColumn(np.array([1, 1, 3], dtype=np.uint64), Coded(np.array([1, 0, 1]), ["a", "b"]),
                       np.array([1.0, 2.0, 3.0]))  # fmt: skip
    assert column.tolist() == [{"b": 1.0}, {}, {"a": 2.0, "b": 3.0}]
    assert ArrayColumn(np.array([0, 1], dtype=np.uint64), ["x"])[1] == ["x"]


def test_mismatched_lengths_and_unknown_types_are_refused() -> None:
    with pytest.raises(ValueError, match="column b has 1 rows, expected 2"):
        native_block(("a", "b"), ("UInt8", "UInt8"), [[1, 2], [1]])
    with pytest.raises(ValueError, match="column b has 1 rows"):  # at once, not mid-insert
        native_chunks(("a", "b"), ("UInt8", "UInt8"), [[1, 2], [1]])
    with pytest.raises(ValueError, match="unsupported ClickHouse type Decimal"):
        native_block(("a",), ("Decimal(9, 2)",), [[1]])


def test_hex_columns_store_each_ids_hex_text(client) -> None:  # type: ignore[no-untyped-def]
    """Ids of one length are written by numpy, others one by one: the same text either way."""
    client.command("CREATE TABLE ids (i UInt64, id String) ENGINE = MergeTree ORDER BY i")
    rng = np.random.default_rng(7)
    same = [rng.bytes(16) for _ in range(50)]
    mixed = [b"", b"\x00", b"\xab\xcd", rng.bytes(16), rng.bytes(70)]
    for first, ids in ((0, same), (100, mixed)):
        block = native_block(("i", "id"), ("UInt64", "String"),
                             [np.arange(first, first + len(ids)), HexColumn(ids)])  # fmt: skip
        insert_blocks(client, "ids", ("i", "id"), [block])
    stored = [row[0] for row in client.query("SELECT id FROM ids ORDER BY i").result_rows]
    assert stored == [raw.hex() for raw in same + mixed]
    assert HexColumn(mixed)[2] == "abcd" and len(HexColumn(mixed)) == 5
    empty = native_block(("id",), ("String",), [HexColumn([b"", b""])])  # one length: 0
    assert empty == native_block(("id",), ("String",), [["", ""]])


def test_row_maps_keep_column_order_within_a_row_whatever_order_rows_come_in() -> None:
    """Rows strictly increasing per column (the usual case) or not (a stable sort): a row's
    entries are in column order, and a column's repeated row keeps its values in order."""
    names = ["a", "b", "c"]
    unordered = [(np.array([2, 0]), 0, np.array([1.0, 2.0])),
                 (np.array([0, 0]), 1, np.array([3.0, 4.0]))]  # fmt: skip
    column = _row_map(3, names, unordered, lambda values: values)
    assert column.tolist() == [{"a": 2.0, "b": 4.0}, {}, {"a": 1.0}]
    assert list(column.keys.codes) == [0, 1, 1, 0] and list(column.values) == [2.0, 3.0, 4.0, 1.0]
    rng = np.random.default_rng(3)
    parts = [(np.flatnonzero(rng.random(500) < 0.7), k, rng.random(500)) for k in range(3)]
    parts = [(rows, k, values[: len(rows)]) for rows, k, values in parts]
    fast = _row_map(500, names, parts, lambda values: values)
    flat = [(int(r), k, v) for rows, k, values in parts for r, v in zip(rows, values, strict=True)]
    expected = [{names[k]: v for r, k, v in sorted(flat, key=lambda e: (e[0], e[1])) if r == row}
                for row in range(500)]  # fmt: skip
    assert fast.tolist() == expected
    assert list(fast.ends) == list(np.cumsum([len(e) for e in expected]))


def test_row_maps_of_columns_with_a_value_in_every_row_are_the_columns_side_by_side() -> None:
    """Every column in every row (a model's calls carrying the same fields): each row's
    entries in column order, as when some rows lack a column."""
    names = ["a", "b", "c"]
    rng = np.random.default_rng(5)
    dense = [(np.arange(400), k, rng.random(400)) for k in (2, 0, 1)]
    column = _row_map(400, names, dense, lambda values: values)
    expected = [{names[k]: values[row] for _, k, values in dense} for row in range(400)]
    assert column.tolist() == expected
    assert list(column.keys.codes[:6]) == [2, 0, 1, 2, 0, 1]  # column order within a row
    assert list(column.ends[:3]) == [3, 6, 9] and column.ends.dtype == np.uint64
    # One column missing one row: the general path, and the same entries for the rest.
    sparse = [*dense[:2], (np.arange(1, 400), 1, dense[2][2][1:])]
    general = _row_map(400, names, sparse, lambda values: values).tolist()
    assert general[0] == {"c": dense[0][2][0], "a": dense[1][2][0]}
    assert general[1:] == expected[1:]
    labels = _row_map(3, names, [(np.arange(3), 0, np.array([4, 5, 4]))],
                      lambda codes: Coded(codes, ["", "", "", "", "x", "y"]))  # fmt: skip
    assert labels.tolist() == [{"a": "x"}, {"a": "y"}, {"a": "x"}]


def test_a_column_of_one_repeated_value_encodes_as_value_by_value() -> None:
    """A String or LowCardinality column holding one value in every row (no prediction ids,
    one service) is written at once, in the same bytes as value by value."""
    from segwatch.collector.store.native import _string, _strings, factorize

    for value in ("", "predict", "é" * 200):  # 200 bytes and more: a two-byte length
        values = [value] * 5
        assert _strings(values) == b"".join(_string(v) for v in values)
        assert factorize(values)[0] == [value] and list(factorize(values)[1]) == [0] * 5
    assert _strings(["a", "b", "a"]) == b"".join(_string(v) for v in ["a", "b", "a"])
    assert factorize(["a", "b", "a"])[0] == ["a", "b"]
    assert _strings([]) == b"" and factorize([])[0] == []


def test_coded_strings_are_written_as_value_by_value() -> None:
    """A coded String column (the raw calls' label values) is gathered from a byte table of
    its dictionary: the bytes must be those of writing each value, whatever the lengths."""
    from segwatch.collector.store.native import _GATHER_CODES, _string, _strings

    rng = np.random.default_rng(7)
    dictionaries = (
        ["ok", "no", "BR"],  # one length: gathered whole
        ["", "a", "review", "é", "😀x", "MISSING"],  # lengths 1 to 8 with their prefix
        ["short", "y" * 63, "z" * 130],  # past the gathered width: value by value
    )
    for dictionary in dictionaries:
        for size in (0, 1, 1000, 2 * _GATHER_CODES + 17):  # several gather steps
            codes = rng.integers(0, len(dictionary), size)
            expected = b"".join(_string(dictionary[c]) for c in codes)
            assert _strings(Coded(codes, dictionary)) == expected, (dictionary, size)
