"""The raw-call insert three ways: segwatch's Native encoder beside clickhouse-connect's own.

One flush of the ingest bench's payload (``--calls`` model calls decoded by the
collector's reader) becomes the ``ml_model_calls`` rows the collector writes
(:func:`segwatch.collector.store.call_rows.call_rows`: numpy columns, maps as
offsets + keys + values). They go into a fresh embedded store, ``--repeat``
times each way, under a fresh deduplication token each time:

1. ``segwatch Native``: the collector's own path, Native blocks built with
   numpy (:mod:`segwatch.collector.store.native`) streamed by ``raw_insert``;
2. ``clickhouse-connect insert``: its ``insert(..., column_oriented=True)``,
   numbers as numpy arrays, strings as lists and each map row as a dict (what
   its Native serializer takes);
3. ``clickhouse-connect Arrow``: its ``insert_arrow`` (``FORMAT Arrow``) of a
   pyarrow table built from the same columns without a step per row (map and
   dictionary arrays from the numpy parts).

Prints per path the CPU per row of this process (user + system, the engine's
threads included: the insert's parsing, sorting and writing), split into
building the path's input and the insert, and checks that every path stored the
same rows (a hash over every column). Run it on its own
(``python bench/ingest_encoders.py [--calls 20000] [--repeat 5]``) or through
``bench/ingest.py``, which runs it as a process of its own (one embedded store
per process).
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from ingest_payload import build_payload

from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn
from segwatch.collector.decode.fast_reader import scan_request
from segwatch.collector.model_calls import ModelCallBatch
from segwatch.collector.store.call_rows import CallRows, call_rows
from segwatch.collector.store.native import Coded, MapColumn
from segwatch.collector.store.rows import SYNCHRONOUS, insert_blocks

__all__ = ["PATHS", "compare"]

TABLE = "ml_model_calls"
CHECKSUM = (
    "SELECT count(), sum(cityHash64(timestamp, trace_id, span_id, duration_ns, model_name, "
    "model_version, model_stage, operation, prediction_id, service_name, "
    "toString(numbers), toString(strings))) FROM ml_model_calls"
)


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _strings_of(values: Any) -> list[str]:
    """A column of strings as a plain list (a Coded column decoded)."""
    if isinstance(values, Coded):
        dictionary = list(values.dictionary)
        return [dictionary[c] for c in np.asarray(values.codes).tolist()]
    return list(values)


def _native(client: Any, rows: CallRows, settings: dict[str, Any]) -> Callable[[], None]:
    chunks = rows.native_chunks()  # encoded while the insert streams them
    return lambda: insert_blocks(client, TABLE, rows.column_names, [chunks], settings)


def _connect_insert(client: Any, rows: CallRows, settings: dict[str, Any]) -> Callable[[], None]:
    data: list[Any] = []
    for name, type_ in zip(rows.column_names, rows.column_types, strict=True):
        values = rows.columns[name]
        if isinstance(values, MapColumn):
            data.append(values.tolist())  # a dict per row: what its serializer takes
        elif type_.startswith("DateTime64"):
            data.append(values.tolist())  # ints: taken as ticks (numpy's are not)
        elif isinstance(values, np.ndarray):
            data.append(values)
        else:
            data.append(_strings_of(values))
    types = list(rows.column_types)
    return lambda: client.insert(TABLE, data, column_names=list(rows.column_names),
                                 column_type_names=types, column_oriented=True,
                                 settings={**SYNCHRONOUS, **settings})  # fmt: skip


def _arrow_strings(values: Any) -> pa.Array:
    """Strings as an Arrow array; a Coded column by taking from its dictionary (no row loop)."""
    if isinstance(values, Coded):
        dictionary = pa.array(list(values.dictionary), pa.string())
        return dictionary.take(pa.array(np.asarray(values.codes, dtype=np.int64)))
    return pa.array(list(values), pa.string())


def _arrow_column(values: Any, type_: str) -> pa.Array:
    if isinstance(values, MapColumn):
        offsets = pa.array(np.concatenate([[0], values.ends]).astype(np.int32))
        keys = _arrow_strings(values.keys)
        items = (pa.array(values.values, pa.float64()) if type_.endswith("Float64)")
                 else pa.array(list(values.values), pa.string()))  # fmt: skip
        return pa.MapArray.from_arrays(offsets, keys, items)
    if isinstance(values, Coded):
        return pa.DictionaryArray.from_arrays(
            pa.array(np.asarray(values.codes, dtype=np.int32)),
            pa.array(list(values.dictionary), pa.string()),
        )
    if type_.startswith("DateTime64"):
        return pa.array(np.asarray(values, dtype=np.int64), pa.timestamp("ns", tz="UTC"))
    if isinstance(values, np.ndarray):
        return pa.array(values)
    return pa.array(list(values), pa.string())


def _arrow(client: Any, rows: CallRows, settings: dict[str, Any]) -> Callable[[], None]:
    table = pa.table({
        name: _arrow_column(rows.columns[name], type_)
        for name, type_ in zip(rows.column_names, rows.column_types, strict=True)
    })  # fmt: skip
    return lambda: client.insert_arrow(TABLE, table, settings={**SYNCHRONOUS, **settings})


PATHS: dict[str, Callable[[Any, CallRows, dict[str, Any]], Callable[[], None]]] = {
    "segwatch Native": _native,
    "clickhouse-connect insert": _connect_insert,
    "clickhouse-connect Arrow": _arrow,
}
"""Per path: given the client, the rows and the insert's settings, build the path's input
and return the insert itself."""


def compare(calls: int, repeat: int) -> list[tuple[str, float, float, tuple[int, int]]]:
    """Per path: (name, build µs CPU per row, insert µs CPU per row, stored checksum)."""
    per_request = min(calls, 1000)
    payload = build_payload(per_request, model="fraud")
    decoded = [scan_request(payload) for _ in range(max(1, round(calls / per_request)))]
    rows = call_rows(ModelCallBatch.concat([b for b in decoded if b is not None]))
    results = []
    with tempfile.TemporaryDirectory(prefix="segwatch-bench-encoders-") as tmp:
        client = open_client(parse_dsn(f"chdb://{tmp}/store"))
        try:
            apply_migrations(client)
            for name, path in PATHS.items():
                client.command(f"TRUNCATE TABLE {TABLE}")
                build = insert = 0.0
                for _ in range(repeat):
                    settings = {"insert_deduplication_token": secrets.token_hex(8)}
                    started = _cpu()
                    run = path(client, rows, settings)
                    built = _cpu()
                    run()
                    build, insert = build + built - started, insert + _cpu() - built
                checksum = client.query(CHECKSUM).result_rows[0]
                per_row = 1e6 / (repeat * len(rows))
                results.append((name, build * per_row, insert * per_row,
                                (int(checksum[0]), int(checksum[1]))))  # fmt: skip
        finally:
            client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="model calls in the flush")
    parser.add_argument("--repeat", type=int, default=5, help="inserts per path")
    args = parser.parse_args()
    started = time.perf_counter()
    results = compare(args.calls, args.repeat)
    print(f"raw-call insert of {args.calls:,} rows, {args.repeat} times per path "
          "(µs CPU per row, engine threads included):")  # fmt: skip
    for name, build, insert, _ in results:
        print(f"  {name:28s} build {build:5.2f} + insert {insert:5.2f} = {build + insert:5.2f}")
    same = len({checksum for *_, checksum in results}) == 1
    print(
        f"  every path stored the same rows: {'yes' if same else 'NO'} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    if not same:
        raise SystemExit("the paths stored different rows")


if __name__ == "__main__":
    main()
