"""Several gateway replicas on one database: each thread here has its own engine, as a
replica would, and they start together at a barrier. On SQLite the writers serialise
(BEGIN IMMEDIATE + busy timeout); on PostgreSQL they really overlap."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from federation.store import GatewayStore, make_engine

T = TypeVar("T")
S = dt.timedelta(seconds=1)
Replicas = Callable[[int], list[GatewayStore]]


@pytest.fixture
def replicas(db_url: str) -> Iterator[Replicas]:
    made: list[GatewayStore] = []

    def make(n: int) -> list[GatewayStore]:
        stores = [GatewayStore(make_engine(db_url)) for _ in range(n)]
        made.extend(stores)
        return stores

    yield make
    for store in made:
        store.dispose()


def together(stores: list[GatewayStore], work: Callable[[GatewayStore], T]) -> list[T]:
    """Run ``work`` on every replica at once; re-raises the first failure."""
    barrier = threading.Barrier(len(stores))

    def run(store: GatewayStore) -> T:
        barrier.wait(timeout=10)
        return work(store)

    with ThreadPoolExecutor(len(stores)) as pool:
        return list(pool.map(run, stores))


def test_same_item_enqueued_by_8_replicas_makes_one_row(sites: GatewayStore,
                                                         replicas: Replicas) -> None:
    rows = together(replicas(8), lambda s: s.enqueue("county-a", "referral", b"{}",
                                                     item_id="ref-42"))
    assert len(set(rows)) == 1
    assert [i.item_id for i in sites.pending_for("county-a")] == ["ref-42"]


def test_4_sweepers_record_each_transition_once(sites: GatewayStore, register,
                                                replicas: Replicas, t0: dt.datetime) -> None:
    site_ids = [f"township-{i:02d}" for i in range(20)]
    for site_id in site_ids:
        sites.upsert_site(site_id, site_id, "township", "county-a")
        register(site_id)
    moved = together(replicas(4), lambda s: s.mark_unreachable(t0 + S, t0 + 2 * S))
    assert sorted(m for batch in moved for m in batch) == site_ids  # each once, none twice
    events = sites.node_events(limit=1000)
    assert sorted(e.site_id for e in events if e.to_state == "unreachable") == site_ids
    assert {n.state for n in sites.list_nodes()} == {"unreachable"}


def test_concurrent_registrations_of_one_node_all_count(sites: GatewayStore, register,
                                                        replicas: Replicas,
                                                        t0: dt.datetime) -> None:
    fields = dict(endpoint="county-a:50051", cert_serial="1", cert_fingerprint="ab",
                  software_version="0.1.0", capabilities=[], now=t0)
    together(replicas(6), lambda s: s.register_node("county-a", **fields))
    node = sites.get_node("county-a")
    assert node is not None and node.registrations == 6
    events = list(reversed(sites.node_events("county-a")))
    assert [e.from_state for e in events] == [None] + ["online"] * 5


def test_heartbeats_racing_sweeps_leave_a_consistent_history(sites: GatewayStore, register,
                                                             replicas: Replicas,
                                                             t0: dt.datetime) -> None:
    register("county-a")

    def work(store: GatewayStore) -> None:
        for i in range(15):
            if store is first:
                store.heartbeat("county-a", i, t0 + (i + 10) * S)
            else:
                store.mark_unreachable(t0 + (i + 10) * S, t0 + (i + 10) * S)

    stores = replicas(3)
    first = stores[0]
    together(stores, work)
    events = list(reversed(sites.node_events("county-a", limit=1000)))
    for before, after in zip(events, events[1:]):
        assert after.from_state == before.to_state  # no transition lost or doubled
    node = sites.get_node("county-a")
    assert node is not None and node.state == events[-1].to_state


def test_a_delivery_cursor_misses_nothing_under_concurrent_enqueues(
    sites: GatewayStore, replicas: Replicas
) -> None:
    producers, per_producer = 4, 25
    done = threading.Event()
    seen: list[str] = []

    def consume() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            page = sites.pending_for("county-a", after_seq=cursor)
            for item in page:
                seen.append(item.item_id)
                cursor = max(cursor, item.seq)
            if finished and not page:  # drained after the producers stopped
                return
            time.sleep(0.001)  # a poller, not a spin: let the writers' busy handlers win

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        together(replicas(producers), lambda s: [
            s.enqueue("county-a", "notice", b"{}") for _ in range(per_producer)])
    finally:
        done.set()
        consumer.join(timeout=30)
    assert len(seen) == len(set(seen)) == producers * per_producer


def test_every_store_on_one_sqlite_engine_queues_its_writers_on_one_lock(engine) -> None:
    """The workflow's, the archive's and the exchange log's writers in one process wait
    for each other on one lock, not in SQLite's busy handler (which sleeps between
    tries); a write opened inside another on the same thread fails in SQLite as before
    instead of hanging on the lock."""
    from federation.archive.store import ArchiveStore
    from federation.workflow.store import WorkflowStore

    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL writers take row locks: there is no process-wide writer lock")
    stores = [GatewayStore(engine), WorkflowStore(engine), ArchiveStore(engine)]
    assert len({id(s._write_lock) for s in stores}) == 1
    lock = stores[0]._write_lock
    with lock, lock:                # re-entrant
        pass
    other = GatewayStore(make_engine("sqlite://"))      # another database: its own lock
    assert other._write_lock is not lock
