"""Spool: the collector's write-ahead log of accepted requests.

An Export is acknowledged once its request is in the spool and the spool is
fsynced; the data reaches ClickHouse later, in bigger and fewer inserts. On
start, whatever was acknowledged but not yet flushed is read back and
flushed (replayed). Layout of the directory:

* ``<id>.wal`` segments, ``id`` growing (nanoseconds at creation): records
  of ``u32 length, u32 crc32, u8 kind, payload``; a torn or corrupt tail
  (a crash mid-write, never acknowledged) is cut off on open;
* ``flushed``: the position up to which everything is in the store;
* ``flushing``: the range of the flush in progress, so a replay repeats
  exactly that flush with the same deduplication token (ClickHouse drops it
  if the first attempt had landed): nothing is lost, nothing counted twice;
* ``spool-id``: a random name for this spool, part of every token, so
  collectors sharing a store never share tokens;
* ``dead-letters/``: flushes set aside after failing for a reason not the
  store's (:mod:`.dead_letters`).

Thread-safe. ``write`` and ``sync`` are separate so concurrent requests
share one fsync (group commit).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REQUEUED",
    "TRACES",
    "TRACES_LIMITED",
    "Position",
    "Record",
    "Spool",
    "SpoolFullError",
    "SpoolLockedError",
    "fsync_directory",
    "pack_record",
    "record_bytes",
    "unpack_records",
]

_HEADER = struct.Struct("<IIB")
TRACES = 1
"""Record kind: a trace request, after its lateness limit (see ``processor.spool_payload``)."""
TRACES_LIMITED = 2
"""Record kind: a trace request, after its lateness limit and its span limits."""
REQUEUED = 3
"""Record kind: a dead-lettered flush sent back (see :mod:`.dead_letters`): its token, then
its records; flushed alone, under its original token."""


@dataclass(frozen=True, order=True)
class Position:
    """Where a record ends: (segment id, byte offset after it)."""

    segment: int
    offset: int

    def __str__(self) -> str:
        return f"{self.segment}.{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        segment, offset = text.strip().split(".")
        return cls(int(segment), int(offset))


START = Position(0, 0)


@dataclass(frozen=True)
class Record:
    end: Position
    kind: int
    payload: bytes


def record_bytes(payload: bytes) -> int:
    """What a record of ``payload`` takes in a segment."""
    return _HEADER.size + len(payload)


def pack_record(kind: int, payload: bytes) -> bytes:
    """A record as a segment holds it: header, then payload."""
    return _header(kind, payload) + payload


def _header(kind: int, payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload), kind)


def unpack_records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The (kind, payload) of each whole, intact record in ``data``, up to the first that is not."""
    for _, kind, payload in _intact_records(data):
        yield kind, payload


def _intact_records(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(offset after it, kind, payload) of each record in ``data`` up to the first torn one."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc, kind = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            return  # a torn write: never acknowledged
        offset = start + length
        yield offset, kind, payload


class SpoolLockedError(OSError):
    """Another collector holds this spool directory."""


class SpoolFullError(RuntimeError):
    """The spool holds its maximum of unflushed bytes: refuse until flushes catch up."""


class Spool:
    """Append-only, fsynced segments of records, released once flushed."""

    def __init__(self, directory: str | Path, *, max_bytes: int, segment_bytes: int = 64 << 20):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._fd = -1
        self._segment = 0
        self._offset = 0
        self._written = START
        self._synced = START
        self._flushed = START
        self._bytes = 0  # unflushed bytes on disk
        self.identity = ""
        self._lock_fd = -1

    # -- opening and replay ----------------------------------------------------

    def open(self) -> tuple[Iterator[Record], tuple[Position, Position] | None]:
        """Recover the directory; return the unflushed records and the interrupted flush, if any.

        The records come lazily, a segment at a time (a spool left large by a
        long outage is never in memory at once); read them before writing.
        The interrupted flush is a (first end, last end) range of records that
        must be flushed again as one, with :meth:`token` of that range.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_directory()
        identity = self.directory / "spool-id"
        if not identity.exists():
            _write_atomically(identity, secrets.token_hex(8))
        self.identity = identity.read_text().strip()
        flushed = self.directory / "flushed"
        self._flushed = Position.parse(flushed.read_text()) if flushed.exists() else START
        interrupted = None
        flushing = self.directory / "flushing"
        if flushing.exists():
            first, last = (Position.parse(p) for p in flushing.read_text().split())
            if last > self._flushed:
                interrupted = (first, last)
        # First pass: cut torn tails, count what is unflushed, make it durable. What a
        # killed process wrote is readable, so it is all replayed (records never synced
        # were never acknowledged: replaying them is at least once for what a client
        # may also resend).
        last_end = START
        for segment in self._segments():
            for record in self._read_segment(segment, truncate=True):
                last_end = record.end
                if record.end > self._flushed:
                    self._bytes += record_bytes(record.payload)
            if last_end.segment == segment and last_end > self._flushed:
                with open(self._path(segment), "rb") as handle:
                    os.fsync(handle.fileno())
        if last_end > START:
            self._written = self._synced = last_end
        self._release_segments()
        self._new_segment()
        return self._unflushed(last_end), interrupted

    def _unflushed(self, last: Position) -> Iterator[Record]:
        """Second pass: the records after the flushed mark, up to ``last``, a segment at a time."""
        for segment in self._segments():
            if segment > last.segment:
                return
            for record in self._read_segment(segment):
                if self._flushed < record.end <= last:
                    yield record

    def read(self, after: Position, upto: Position) -> Iterator[Record]:
        """The records ending after ``after``, up to ``upto``, read from disk one at a time.

        For reading back what was spilled (acknowledged, but not kept in memory
        while the store was behind); ``upto`` must be a record end already
        written. Never holds more than one record in memory.
        """
        for segment in self._segments():
            if segment < after.segment:
                continue
            if segment > upto.segment:
                return
            with open(self._path(segment), "rb") as handle:
                offset = after.offset if segment == after.segment else 0
                handle.seek(offset)
                while segment < upto.segment or offset < upto.offset:
                    header = handle.read(_HEADER.size)
                    if len(header) < _HEADER.size:
                        break  # the end of a full segment
                    length, crc, kind = _HEADER.unpack(header)
                    payload = handle.read(length)
                    if len(payload) < length or zlib.crc32(payload) != crc:
                        raise OSError(f"spool segment {segment} is corrupt at offset {offset}")
                    offset += _HEADER.size + length
                    yield Record(Position(segment, offset), kind, payload)

    def reader(self, end: Position, length: int) -> Callable[[int, int], bytes]:
        """Reads bytes ``start:stop`` of the last ``length`` bytes of the record ending at
        ``end`` (offsets from where those bytes start), from disk, each read on its own.

        For what a pending batch needs of its request only at its flush (the few spans
        ``storage.traces`` writes), so that it need not keep the request in memory. Valid
        while the record is unflushed: its segment is released only once a flush passes it.
        Raises ``OSError`` when the segment is gone or too short.
        """
        path, base = self._path(end.segment), end.offset - length

        def read(start: int, stop: int) -> bytes:
            if not 0 <= start <= stop <= length:
                raise ValueError(f"bytes {start}:{stop} are outside the record's {length}")
            with open(path, "rb", buffering=0) as handle:
                data = os.pread(handle.fileno(), stop - start, base + start)
            if len(data) < stop - start:
                raise OSError(f"spool segment {end.segment} ends before offset {base + stop}")
            return data

        return read

    def _lock_directory(self) -> None:
        """One collector per spool: a second one would replay and release the first's data."""
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLockedError(
                f"the spool {self.directory} is used by another collector: give each collector "
                "its own storage.spool.path"
            ) from None
        self._lock_fd = fd

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.wal") if p.stem.isdigit())

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:020d}.wal"

    def _read_segment(self, segment: int, truncate: bool = False) -> Iterator[Record]:
        path = self._path(segment)
        data = path.read_bytes()
        offset = 0
        for offset, kind, payload in _intact_records(data):
            yield Record(Position(segment, offset), kind, payload)
        if truncate and offset < len(data):
            with open(path, "r+b") as handle:
                handle.truncate(offset)
                os.fsync(handle.fileno())

    # -- appending -------------------------------------------------------------

    def write(self, kind: int, payload: bytes, head: bytes = b"") -> Position:
        """Append a record of ``head + payload`` (not yet durable: call :meth:`sync` with
        the position); the two are written one after the other, never joined in memory.

        Raises :class:`SpoolFullError` when the unflushed bytes would pass ``max_bytes``.
        """
        size = _HEADER.size + len(head) + len(payload)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                raise SpoolFullError(
                    f"the spool holds {self._bytes / 2**20:.0f} MiB not yet in the store "
                    f"(limit {self.max_bytes / 2**20:.0f} MiB)"
                )
            if self._offset and self._offset + size > self.segment_bytes:
                self._new_segment()
            # One system call, and no copy of a request that may be megabytes.
            crc = zlib.crc32(payload, zlib.crc32(head))  # the CRC of head + payload
            header = _HEADER.pack(len(head) + len(payload), crc, kind)
            os.writev(self._fd, [header, head, payload])
            self._offset += size
            self._bytes += size
            self._written = Position(self._segment, self._offset)
            return self._written

    def sync(self, position: Position) -> None:
        """Return once everything up to ``position`` is on disk (one fsync serves many)."""
        if position <= self._synced:
            return
        with self._sync_lock:
            if position <= self._synced:
                return
            with self._lock:  # a duplicate stays valid if the segment rotates meanwhile
                target, fd = self._written, os.dup(self._fd)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            self._synced = max(self._synced, target)

    @property
    def synced(self) -> Position:
        return self._synced

    @property
    def flushed(self) -> Position:
        """Everything up to here is in the store (or set aside as a dead letter)."""
        return self._flushed

    @property
    def unflushed_bytes(self) -> int:
        return self._bytes

    def _new_segment(self) -> None:
        if self._fd >= 0:
            os.fdatasync(self._fd)  # everything before the new segment is durable
            os.close(self._fd)
            self._synced = max(self._synced, self._written)
        segment = max(time.time_ns(), self._segment + 1, *(s + 1 for s in self._segments()))
        self._fd = os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fsync_directory(self.directory)
        self._segment, self._offset = segment, 0

    # -- flushing --------------------------------------------------------------

    def token(self, first: Position, last: Position) -> str:
        """The deduplication token of the flush of records ``first`` … ``last`` (their ends)."""
        return f"segwatch-{self.identity}-{first}-{last}"

    def begin_flush(self, first: Position, last: Position) -> None:
        """Record that records ``first`` … ``last`` are being flushed (before inserting them)."""
        _write_atomically(self.directory / "flushing", f"{first} {last}")

    def end_flush(self, last: Position, released_bytes: int) -> None:
        """Everything up to ``last`` is in the store: advance the mark, drop whole segments."""
        _write_atomically(self.directory / "flushed", str(last))
        with self._lock:
            self._flushed = max(self._flushed, last)
            self._bytes = max(0, self._bytes - released_bytes)
        self._release_segments()

    def _release_segments(self) -> None:
        for segment in self._segments():
            if segment < self._flushed.segment and segment != self._segment:
                self._path(segment).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.fdatasync(self._fd)
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
