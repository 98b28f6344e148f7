"""The operations snapshot behind the store-computed Prometheus gauges, on both backends."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Session

from federation.archive.store import ArchiveStore
from federation.store.models import IdentityReview
from federation.store.ops_view import operations_snapshot


def _review(engine, at: dt.datetime, status: str = "open") -> None:
    with Session(engine) as s, s.begin():
        s.add(IdentityReview(site_id="county-a", record_id="p1", candidate_person_id="x",
                             candidate_site_id="city-1", candidate_record_id="p9", weight=3.0,
                             reason="between-thresholds", status=status, created_at=at))


def test_snapshot_counts_nodes_sync_inbox_and_reviews(sites, register, engine, t0):
    register("county-a", now=t0)
    register("city-1", now=t0)
    sites.mark_unreachable(t0 + dt.timedelta(seconds=1), t0 + dt.timedelta(seconds=30))
    register("county-a", now=t0 + dt.timedelta(seconds=40))   # back online
    first = sites.enqueue("county-b", "referral", b"{}", source_site="city-1")
    sites.enqueue("county-b", "consult", b"{}", source_site="city-1")
    done = sites.enqueue("township-a1", "notice", b"{}")
    sites.ack("township-a1", done.item_id, t0 + dt.timedelta(minutes=1))
    archive = ArchiveStore(engine)
    archive.apply("county-a", "e1", [], after=10, node_head=10, rejected=0,
                  now=t0, caught_up=True)
    archive.apply("city-1", "e1", [], after=5, node_head=10, rejected=0,
                  now=t0 + dt.timedelta(minutes=3), caught_up=False)
    _review(engine, t0 - dt.timedelta(hours=2))
    _review(engine, t0 - dt.timedelta(hours=1))
    _review(engine, t0 - dt.timedelta(hours=5), status="accepted")

    now = t0 + dt.timedelta(minutes=10)
    snap = operations_snapshot(engine, now)
    by = {s.site_id: s for s in snap.sites}
    assert set(by) == {"city-1", "county-a", "county-b", "township-a1"}
    assert by["county-a"].node_state == "online" and by["city-1"].node_state == "unreachable"
    assert by["county-b"].node_state is None and by["county-b"].heartbeat_age_s is None
    assert by["county-a"].heartbeat_age_s == 600 - 40
    assert (by["county-a"].sync_behind, by["county-a"].sync_lag_s) == (0, 0.0)
    # city-1 never caught up: lag counts from its last pull
    assert (by["city-1"].sync_behind, by["city-1"].sync_lag_s) == (5, 7 * 60)
    assert by["city-1"].last_pull_age_s == 7 * 60
    assert by["county-b"].sync_behind is None
    assert by["county-b"].inbox_pending == 2
    assert by["township-a1"].inbox_pending == 0 and by["township-a1"].inbox_oldest_s == 0
    # work items carry the store's own clock: age them from the first one's creation
    later = operations_snapshot(engine, first.created_at + dt.timedelta(seconds=90))
    assert abs(next(s for s in later.sites if s.site_id == "county-b").inbox_oldest_s
               - 90) < 0.01
    assert snap.review_open == 2
    assert snap.review_oldest_s == (dt.timedelta(hours=2, minutes=10)).total_seconds()


def test_an_empty_store_gives_zeroes(sites, engine):
    snap = operations_snapshot(engine)
    assert snap.review_open == 0 and snap.review_oldest_s == 0
    assert all(s.inbox_pending == 0 and s.node_state is None for s in snap.sites)
