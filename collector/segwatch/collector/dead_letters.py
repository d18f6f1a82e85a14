"""Dead letters: flushes set aside because they fail for a reason that is not the store's.

A flush that the store refuses while it answers everything else (or that the
aggregator cannot take: a bug) would otherwise be retried forever, and since
flushes follow the spool's order, nothing after it would ever be stored, across
restarts too. After ``storage.spool.max_flush_attempts`` such failures the
flusher moves the flush's spool records here and goes on:

* ``<spool>/dead-letters/<name>.wal``: the records, in the spool's own format;
* ``<spool>/dead-letters/<name>.json``: why, when, how many calls, and the
  flush's deduplication token (written last: a letter without it is unfinished).

``segwatch spool`` lists them; ``segwatch spool requeue NAME`` sends one back:
its records go into the spool as one :data:`.spool.REQUEUED` record that is
flushed alone under the original token, so tables that had landed before the
failure are not counted twice (ClickHouse drops the repeat).
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spool import Record, fsync_directory, pack_record, unpack_records

__all__ = ["DeadLetter", "DeadLetters", "requeued_payload", "split_requeued"]

_TOKEN_LENGTH = struct.Struct("<H")


@dataclass(frozen=True)
class DeadLetter:
    """One set-aside flush, as its ``.json`` describes it."""

    name: str
    token: str
    reason: str
    calls: int
    records: int
    failed_at: float  # Unix seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "token": self.token,
            "reason": self.reason,
            "calls": self.calls,
            "records": self.records,
            "failed_at": self.failed_at,
        }


class DeadLetters:
    """The dead-letter folder of one spool. Not locked: the spool's lock guards writers."""

    def __init__(self, spool_directory: str | Path) -> None:
        self.directory = Path(spool_directory) / "dead-letters"

    def add(self, records: Iterable[Record], *, token: str, reason: str, calls: int) -> DeadLetter:
        """Write a flush's records and its description, durably; return its description."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}"
        count = 0
        with open(self.directory / f"{name}.wal", "wb") as handle:
            for record in records:
                handle.write(pack_record(record.kind, record.payload))
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        letter = DeadLetter(name, token, reason, calls, count, time.time())
        _write_json(self.directory / f"{name}.json", letter.to_json())
        fsync_directory(self.directory)
        return letter

    def list(self) -> list[DeadLetter]:
        """Every finished dead letter, oldest first."""
        if not self.directory.is_dir():
            return []
        letters = []
        for path in sorted(self.directory.glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            letters.append(DeadLetter(**data))
        return letters

    def get(self, name: str) -> DeadLetter:
        for letter in self.list():
            if letter.name == name:
                return letter
        raise ValueError(f"no dead letter named {name!r} in {self.directory}")

    def requeued_payload(self, letter: DeadLetter) -> bytes:
        """The payload of the :data:`.spool.REQUEUED` record that sends ``letter`` back."""
        data = (self.directory / f"{letter.name}.wal").read_bytes()
        return requeued_payload(letter.token, unpack_records(data))

    def remove(self, letter: DeadLetter) -> None:
        """Forget ``letter`` (once it is back in the spool)."""
        (self.directory / f"{letter.name}.json").unlink(missing_ok=True)
        (self.directory / f"{letter.name}.wal").unlink(missing_ok=True)
        fsync_directory(self.directory)


def requeued_payload(token: str, records: Iterable[tuple[int, bytes]]) -> bytes:
    """``u16 token length, token, records``: one flush's records under its own token."""
    encoded = token.encode("ascii")
    return _TOKEN_LENGTH.pack(len(encoded)) + encoded + b"".join(pack_record(*r) for r in records)


def split_requeued(payload: bytes) -> tuple[str, Iterator[tuple[int, bytes]]]:
    """The token and the (kind, payload) records of a :data:`.spool.REQUEUED` payload."""
    (length,) = _TOKEN_LENGTH.unpack_from(payload)
    start = _TOKEN_LENGTH.size
    token = payload[start : start + length].decode("ascii")
    return token, unpack_records(payload[start + length :])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
