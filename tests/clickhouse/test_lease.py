"""Claims and leases on the real embedded engine, raced by threads with clients of their own.

chdb lets one process open one store directory through several clients; each
thread here has its own, as each collector process has its own connection to
a shared store. The last test races them over HTTP, through ``segwatch
serve``'s door: the server path, with the same SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from waiting import wait_until

from segwatch.clickhouse.lease import (
    LEASE_TABLE,
    Lease,
    LeaseHeldError,
    LeaseLostError,
    claim_once,
    holder_name,
)
from segwatch.clickhouse.store import open_client, parse_dsn

THREADS = 6
KEYS = 50


@pytest.fixture
def clients(store_dsn: str) -> Iterator[list[Client]]:
    opened = [open_client(parse_dsn(store_dsn)) for _ in range(THREADS)]
    yield opened
    for client in opened:
        client.close()


def test_a_second_insert_with_the_same_token_adds_no_row(clients: list[Client]) -> None:
    """The engine's insert deduplication, through clickhouse-connect's chdb client
    (INSERT ... FROM INFILE): the first claimant wins, the second adds nothing."""
    first, second = clients[0], clients[1]
    assert claim_once(first, "window-1", "alice") is True  # creates the table on the way
    assert claim_once(second, "window-1", "bob") is False
    assert claim_once(first, "window-1", "alice") is True  # the winner asking again
    rows = first.query(f"SELECT key, holder FROM {LEASE_TABLE}").result_rows
    assert rows == [("claim:window-1", "alice")]
    assert claim_once(second, "window-2", "bob") is True


def test_racing_threads_get_exactly_one_winner_per_key(clients: list[Client]) -> None:
    """Every thread claims every key at the same moment (a barrier per key)."""
    _race_for_keys(clients)


def test_claims_and_leases_over_http_through_segwatch_serve(tmp_path: Path) -> None:
    from segwatch.collector.config import CollectorConfig, StorageConfig
    from segwatch.collector.config.serve import ServeConfig
    from segwatch.collector.service.serving import StoreServer

    server = StoreServer(CollectorConfig(
        storage=StorageConfig(dsn=f"chdb://{tmp_path / 'served'}"),
        serve=ServeConfig(endpoint="127.0.0.1:0"),
    ))  # fmt: skip
    server.start()
    assert server.door is not None
    port = server.door.port
    opened = [
        clickhouse_connect.get_client(host="127.0.0.1", port=port, database="segwatch")
        for _ in range(THREADS)
    ]
    try:
        _race_for_keys(opened, keys=15)
        alice = Lease(opened[0], "migrations", "alice")
        alice.acquire()
        assert Lease(opened[1], "migrations", "bob").try_acquire() is False
        alice.release()
        assert Lease(opened[1], "migrations", "bob").try_acquire() is True
    finally:
        for client in opened:
            client.close()
        server.stop()


def _race_for_keys(clients: list[Client], keys: int = KEYS) -> None:
    """Each client's thread claims each of ``keys`` keys at once; exactly one wins each."""
    barrier = threading.Barrier(len(clients))
    won: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def race(client: Client, holder: str) -> None:
        try:
            for number in range(keys):
                barrier.wait(timeout=60)
                key = f"detector:psi:{number}"
                if claim_once(client, key, holder):
                    with lock:
                        won.setdefault(key, []).append(holder)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
            barrier.abort()

    holders = [holder_name(f"racer-{i}") for i in range(len(clients))]
    assert len(set(holders)) == len(clients)
    threads = [
        threading.Thread(target=race, args=pair) for pair in zip(clients, holders, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert sorted(won) == sorted(f"detector:psi:{n}" for n in range(keys))
    assert {key: len(winners) for key, winners in won.items() if len(winners) != 1} == {}
    stored = clients[0].query(f"SELECT key, holder FROM {LEASE_TABLE} WHERE lease = ''")
    assert sorted(map(tuple, stored.result_rows)) == sorted(
        ("claim:" + k, w[0]) for k, w in won.items()
    )


def test_a_held_lease_blocks_another_holder_until_released(clients: list[Client]) -> None:
    alice = Lease(clients[0], "migrations", "alice", seconds=600)
    bob = Lease(clients[1], "migrations", "bob", seconds=600, poll=0.05)
    alice.acquire()
    assert bob.try_acquire() is False
    with pytest.raises(LeaseHeldError, match="held by alice; it expires at 20") as held:
        bob.acquire(wait=0)
    assert held.value.state.holder == "alice"
    assert not held.value.state.lapsed

    waited: list[BaseException | None] = []
    waiter = threading.Thread(target=lambda: waited.append(_outcome(bob.acquire, 60)))
    waiter.start()
    try:
        assert bob.generation is None  # still waiting: alice has not released
        alice.release()
    finally:
        waiter.join(90)
    assert waited == [None]
    state = bob.state()
    assert state is not None
    assert (state.holder, state.generation, state.lapsed) == ("bob", 3, False)  # 2: released
    bob.release()
    assert alice.try_acquire() is True


def test_the_holder_renews_and_the_context_manager_releases(clients: list[Client]) -> None:
    with Lease(clients[0], "migrations", "alice", seconds=600) as alice:
        alice.renew()
        state = alice.state()
        assert state is not None
        assert (state.holder, state.generation) == ("alice", 2)
        assert Lease(clients[1], "migrations", "bob").try_acquire() is False
    state = alice.state()
    assert state is not None
    assert (state.generation, state.released, state.lapsed) == (3, True, True)
    assert Lease(clients[1], "migrations", "bob").try_acquire() is True


def test_an_expired_lease_is_taken_over_and_its_late_holder_knows(clients: list[Client]) -> None:
    alice = Lease(clients[0], "migrations", "alice", seconds=0.2)
    bob = Lease(clients[1], "migrations", "bob", seconds=600)
    alice.acquire()
    wait_until(bob.try_acquire, timeout=30)  # alice never renewed: her lease lapses
    with pytest.raises(LeaseLostError, match="taken over: held by bob"):
        alice.renew()
    alice.generation = 1  # a late release from a holder that still believes it holds it
    alice.release()
    state = bob.state()
    assert state is not None
    assert (state.holder, state.generation, state.released) == ("bob", 2, False)


def test_kept_renews_the_lease_while_its_holder_is_busy(clients: list[Client]) -> None:
    """The holder's thread does nothing for three lease renewals (as if a statement ran);
    the renewing thread, on a client of its own, keeps the lease from lapsing."""
    alice = Lease(clients[0], "migrations", "alice", seconds=1.5)
    bob = Lease(clients[1], "migrations", "bob")
    alice.acquire()
    bob_took: list[bool] = []

    def renewed_three_times() -> bool:
        bob_took.append(bob.try_acquire())
        return (alice.generation or 0) >= 4

    with alice.kept(clients[2]):
        wait_until(renewed_three_times, timeout=30)
    assert True not in bob_took
    alice.confirm()  # still hers, renewed once more
    state = alice.state()
    assert state is not None and (state.holder, state.lapsed) == ("alice", False)


def test_a_lease_taken_over_under_the_renewing_thread_fails_the_next_confirm(
    clients: list[Client],
) -> None:
    alice = Lease(clients[0], "migrations", "alice", seconds=1.5)
    alice.acquire()
    with alice.kept(clients[2]):
        # Bob claims the next generations first, as he would have had alice's lapsed.
        held = alice.generation or 0
        for generation in range(held + 1, held + 10):
            key = f"lease:migrations:{generation}"
            clients[1].insert(
                LEASE_TABLE, [[key, "migrations", generation, "bob", 600_000]],
                column_names=["key", "lease", "generation", "holder", "lease_ms"],
                settings={"insert_deduplication_token": key, "async_insert": 0},
            )  # fmt: skip
        wait_until(lambda: alice.generation is None, timeout=30)  # its next renewal lost
    with pytest.raises(LeaseLostError, match="expired and was taken over: held by bob"):
        alice.confirm()
    alice.release()  # a holder that lost the lease releases nothing
    state = Lease(clients[1], "migrations").state()
    assert state is not None and (state.holder, state.released) == ("bob", False)


def test_leases_of_different_names_do_not_meet(clients: list[Client]) -> None:
    Lease(clients[0], "migrations", "alice").acquire()
    assert Lease(clients[1], "reindex", "bob").try_acquire() is True
    assert claim_once(clients[1], "lease:migrations:2", "bob") is True  # not a lease key


def _outcome(call: Callable[..., object], *args: object) -> BaseException | None:
    try:
        call(*args)
    except BaseException as exc:
        return exc
    return None
