"""Where a collector's spool lives, and what an operator does with its dead letters.

``segwatch spool`` lists the dead letters (:mod:`.dead_letters`) of the
configured spool; ``segwatch spool requeue NAME...`` sends them back. A
running collector holds its spool's lock, so then the requeue goes through
its API (:meth:`.processor.ModelCallProcessor.requeue`); otherwise the records
are appended to the spool here and the next start flushes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from segwatch.clickhouse.store import parse_dsn
from segwatch.collector.config.collector_config import CollectorConfig

from .dead_letters import DeadLetter, DeadLetters, open_settled
from .spool import REQUEUED, Spool

__all__ = ["requeue_dead_letters", "spool_directory"]


def spool_directory(config: CollectorConfig) -> str | None:
    """The spool directory the config gives its collector; None when it has no spool."""
    settings = config.storage.spool
    location = parse_dsn(config.storage.dsn)
    if not settings.enabled or location.in_memory:
        return None  # acknowledged means stored
    if settings.path:
        return settings.path
    base = location.path if location.embedded else "."
    return os.path.join(str(base), "segwatch-spool")


def dead_letters(config: CollectorConfig) -> DeadLetters:
    directory = spool_directory(config)
    if directory is None:
        raise ValueError("this configuration has no spool (storage.spool.enabled is false)")
    return DeadLetters(directory)


def requeue_dead_letters(config: CollectorConfig, names: list[str]) -> int:
    """Append the named dead letters to the (unused) spool; the calls they hold.

    Raises :class:`.spool.SpoolLockedError` while a collector holds the spool,
    ``ValueError`` for a name that is not a dead letter. A letter is removed
    only once its records are fsynced in the spool; if this is interrupted in
    between, requeueing it again is harmless (the repeat flush carries the
    same token, which the store drops).
    """
    letters = dead_letters(config)
    spool = Spool(letters.directory.parent, max_bytes=config.storage.spool.max_mib << 20)
    open_settled(spool)  # a letter's records are never both replayed and requeued
    try:
        return send_back(letters, names, lambda payload: spool.sync(spool.write(REQUEUED, payload)))
    finally:
        spool.close()


def send_back(letters: DeadLetters, names: list[str], send: Callable[[bytes], object]) -> int:
    """Hand each named letter's REQUEUED payload to ``send``, forgetting the letter once
    ``send`` returned (it is then durable in the spool); the calls they hold.

    Every name is checked first: a ``ValueError`` for one that is not a letter
    sends none.
    """
    chosen: list[DeadLetter] = [letters.get(name) for name in names]
    for letter in chosen:
        send(letters.requeued_payload(letter))
        letters.remove(letter)
    return sum(letter.calls for letter in chosen)
