"""Dead letters: a flush the store refuses is set aside, and sent back once, never lost.

The store is the real embedded engine behind a fault-injecting wrapper
(``store_faults.RefusesData``: inserts into one table fail with ClickHouse's
TYPE_MISMATCH while every other query answers), the only way to make the
engine refuse good data on cue. The raw-calls table is the one refused, so the
aggregates of each flush land before it fails: sending the flush back must
not count them twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from store_faults import Outage, RefusesData
from waiting import wait_until

from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.config import SpoolConfig
from segwatch.collector.durable.dead_letters import DeadLetters, open_settled, requeued_payload
from segwatch.collector.durable.processor import ModelCallProcessor, spool_payload
from segwatch.collector.durable.spool import START, TRACES, Position, Spool
from segwatch.collector.durable.spool_admin import send_back
from segwatch.collector.store.exporter import ClickHouseExporter
from segwatch.instrumentation import monitor

CALLS = 20


class _Pipeline:
    """Exporter, spool and processor on ``store``; ``replay`` as a start would."""

    def __init__(self, store: Any, directory: Path, **flushing: Any) -> None:
        self.exporter = ClickHouseExporter(store)
        self.exporter.start()
        self.spool = Spool(directory, max_bytes=1 << 26)
        settings = SpoolConfig(**{"flush_interval": 0.05, "max_flush_attempts": 2, **flushing})
        self.processor = ModelCallProcessor(
            SegmentAggregator(), self.exporter, spool=self.spool, flushing=settings
        )
        self.processor.start()
        self.processor.replay(*open_settled(self.spool))

    @property
    def letters(self) -> DeadLetters:
        return DeadLetters(self.spool.directory)

    def close(self) -> None:
        self.processor.shutdown()
        self.exporter.shutdown()
        self.spool.close()


def _request(recorder: Any, model_name: str = "m", calls: int = CALLS) -> Any:
    model = monitor(model_name, tracer_provider=recorder.provider)
    for i in range(calls):
        with model.call() as call:
            call.features(x=float(i))
    return recorder.request()


def _counts(client: Any) -> tuple[int, float]:
    calls = client.query("SELECT count() FROM ml_model_calls").result_rows[0][0]
    counted = client.query(
        "SELECT sum(count) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.x'"
    ).result_rows[0][0]
    return int(calls), float(counted)


def _refused_once(client: Any, recorder: Any, directory: Path) -> tuple[RefusesData, _Pipeline]:
    """A pipeline whose store refuses the raw calls, once it has made one dead letter."""
    store = RefusesData(client, "ml_model_calls")
    pipeline = _Pipeline(store, directory)
    try:
        pipeline.processor.consume(_request(recorder))
        wait_until(lambda: pipeline.processor.buffer.dead_letters == 1, timeout=60)
    except BaseException:
        pipeline.close()
        raise
    return store, pipeline


def _send_back(pipeline: _Pipeline, name: str) -> int:
    return send_back(pipeline.letters, [name], pipeline.processor.requeue)


def test_a_refused_flush_is_set_aside_and_sent_back_once(
    tmp_path: Path, client: Any, recorder: Any
) -> None:
    store, pipeline = _refused_once(client, recorder, tmp_path / "spool")
    try:
        assert store.refused == 2  # max_flush_attempts
        assert _counts(client) == (0, CALLS)  # the aggregates landed before the refusal

        # Sent back while the store still refuses: it fails again, a letter again.
        (first,) = pipeline.letters.list()
        assert _send_back(pipeline, first.name) == CALLS
        wait_until(lambda: pipeline.processor.buffer.dead_letters == 2, timeout=60)

        # The cause is fixed: other traffic flows, and the letter sent back a second time
        # (its records are a requeued letter) is stored once, under the original token.
        store.refusing = False
        pipeline.processor.consume(_request(recorder))
        (second,) = pipeline.letters.list()
        assert second.token == first.token and second.calls == CALLS
        _send_back(pipeline, second.name)
        pipeline.processor.flush(timeout=60)
    finally:
        pipeline.close()
    assert _counts(client) == (2 * CALLS, 2 * CALLS)
    assert pipeline.letters.list() == []


def test_a_crash_between_the_letter_and_the_spool_mark_stores_nothing_twice(
    tmp_path: Path, client: Any, recorder: Any
) -> None:
    _, pipeline = _refused_once(client, recorder, tmp_path / "spool")
    pipeline.close()
    # As if the process died after writing the letter, before the spool's mark moved.
    (tmp_path / "spool" / "flushed").write_text(str(START))

    restarted = _Pipeline(client, tmp_path / "spool")  # the store takes everything now
    try:
        restarted.processor.flush(timeout=60)
        assert _counts(client) == (0, CALLS)  # not replayed: it is a dead letter
        (letter,) = restarted.letters.list()
        _send_back(restarted, letter.name)
        restarted.processor.flush(timeout=60)
    finally:
        restarted.close()
    assert _counts(client) == (CALLS, CALLS)
    assert restarted.spool.unflushed_bytes == 0


class _OutageInOrder(Outage):
    """:class:`Outage` that also notes the token of each raw-calls insert, in order."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.tokens: list[str] = []

    def raw_insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        result = super().raw_insert(table, *args, **kwargs)
        if table == "ml_model_calls":
            self.tokens.append(kwargs["settings"]["insert_deduplication_token"])
        return result


def _spool_range(token: str) -> tuple[Position, Position]:
    first, last = token.removesuffix("-ml_model_calls").split("-")[-2:]
    return Position.parse(first), Position.parse(last)


def test_a_letter_sent_back_while_calls_are_spilled_keeps_the_spool_order(
    tmp_path: Path, client: Any, recorder: Any
) -> None:
    """A requeued letter arriving while acknowledged calls wait in the spool only joins
    them there: flushed after them (a flush marks the spool flushed up to its end, so
    flushing it first would mark calls flushed that are not stored)."""
    store = _OutageInOrder(client)  # down
    pipeline = _Pipeline(store, tmp_path / "spool", flush_calls=100, max_pending_calls=100)
    sent = 0
    try:
        while not pipeline.processor.buffer.spilling:
            pipeline.processor.consume(_request(recorder))
            sent += CALLS
        pipeline.processor.consume(_request(recorder))  # spilled
        sent += CALLS
        letter = requeued_payload(
            "segwatch-test-letter",
            [(TRACES, spool_payload(_request(recorder).SerializeToString()))],
        )
        assert pipeline.processor.requeue(letter) == CALLS
        letter_end = pipeline.spool.synced
        pipeline.processor.consume(_request(recorder))  # and more after it
        sent += 2 * CALLS
        store.down = False
        pipeline.processor.flush(timeout=60)
        assert _counts(client) == (sent, sent)  # flush() returned once everything was stored
        assert pipeline.spool.unflushed_bytes == 0
    finally:
        pipeline.close()
    # The flushes follow the spool: each before the letter ends before it.
    at = store.tokens.index("segwatch-test-letter-ml_model_calls")
    before = [_spool_range(token) for token in store.tokens[:at]]
    after = [_spool_range(token) for token in store.tokens[at + 1 :]]
    assert before and after
    assert all(last < letter_end for _, last in before)
    assert all(first > letter_end for first, _ in after)
    assert pipeline.processor.buffer.dead_letters == 0  # an outage is never a dead letter
