"""Dead letters: flushes set aside because they fail for a reason that is not the store's.

A flush that the store refuses while it answers everything else (or that the
aggregator cannot take: a bug) would otherwise be retried forever, and since
flushes follow the spool's order, nothing after it would ever be stored, across
restarts too. After ``storage.spool.max_flush_attempts`` such failures the
flusher moves the flush's spool records here and goes on:

* ``<spool>/dead-letters/<name>.wal``: the records, in the spool's own format;
* ``<spool>/dead-letters/<name>.json``: why, when, how many calls, the
  flush's deduplication token and where its records end in the spool (written
  last: a ``.wal`` without it is unfinished, and removed at the next start).

The spool is marked flushed past a letter only once the letter is written; a
crash in between leaves a letter whose records the spool would replay too, so
at start :meth:`DeadLetters.settle` marks them flushed first: a flush is either
replayed or a dead letter, never both.

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

from .spool import REQUEUED, Position, Record, Spool, fsync_directory, pack_record, unpack_records

__all__ = [
    "DeadLetter",
    "DeadLetters",
    "open_settled",
    "requests_in",
    "requeued_payload",
    "split_requeued",
]

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
    end: str  # the spool position its records end at (Position's text)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "token": self.token,
            "reason": self.reason,
            "calls": self.calls,
            "records": self.records,
            "failed_at": self.failed_at,
            "end": self.end,
        }


class DeadLetters:
    """The dead-letter folder of one spool. Not locked: the spool's lock guards writers."""

    def __init__(self, spool_directory: str | Path) -> None:
        self.directory = Path(spool_directory) / "dead-letters"

    def add(
        self, records: Iterable[Record], *, token: str, reason: str, calls: int, end: Position
    ) -> DeadLetter:
        """Write a flush's records (spool records up to ``end``) and its description, durably."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}"
        count = 0
        with open(self.directory / f"{name}.wal", "wb") as handle:
            for record in records:
                handle.write(pack_record(record.kind, record.payload))
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        letter = DeadLetter(name, token, reason, calls, count, time.time(), str(end))
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
        """The payload of the :data:`.spool.REQUEUED` record that sends ``letter`` back.

        A letter made of a requeued letter (it failed again) holds a REQUEUED
        record; reading the payload back unwraps it (:func:`requests_in`), and
        the letter's token is still the original one.
        """
        data = (self.directory / f"{letter.name}.wal").read_bytes()
        return requeued_payload(letter.token, unpack_records(data))

    def settle(self, spool: Spool) -> None:
        """At start, before the replay: forget unfinished letters, and mark the records of
        finished ones flushed if a crash came between writing a letter and that mark."""
        if not self.directory.is_dir():
            return
        for path in self.directory.glob("*.wal"):
            if not path.with_suffix(".json").exists():
                path.unlink()  # the crash came first: the flush is replayed instead
        for letter in self.list():
            end = Position.parse(letter.end)
            if end > spool.flushed:
                size = (self.directory / f"{letter.name}.wal").stat().st_size
                spool.end_flush(end, size)

    def remove(self, letter: DeadLetter) -> None:
        """Forget ``letter`` (once it is back in the spool)."""
        (self.directory / f"{letter.name}.json").unlink(missing_ok=True)
        (self.directory / f"{letter.name}.wal").unlink(missing_ok=True)
        fsync_directory(self.directory)


def requeued_payload(token: str, records: Iterable[tuple[int, bytes]]) -> bytes:
    """``u16 token length, token, records``: one flush's records under its own token."""
    encoded = token.encode("ascii")
    return _TOKEN_LENGTH.pack(len(encoded)) + encoded + b"".join(pack_record(*r) for r in records)


def open_settled(spool: Spool) -> tuple[Iterator[Record], tuple[Position, Position] | None]:
    """Open ``spool`` for the replay (:meth:`.spool.Spool.open`), its dead letters settled:
    the records a letter holds are neither replayed nor flushed again."""
    records, interrupted = spool.open()
    DeadLetters(spool.directory).settle(spool)
    if interrupted is not None and interrupted[1] <= spool.flushed:
        interrupted = None
    return records, interrupted


def requests_in(records: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    """The trace requests among ``records``, those inside requeued letters unwrapped."""
    for kind, payload in records:
        if kind == REQUEUED:
            yield from requests_in(split_requeued(payload)[1])
        else:
            yield kind, payload


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
