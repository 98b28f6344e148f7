"""Work items: queued for a site's node until it acknowledges them."""

from __future__ import annotations

import datetime as dt

import pytest

from federation.errors import Conflict, InvalidInput, NotFound, UnknownSite
from federation.store import GatewayStore

S = dt.timedelta(seconds=1)


def test_enqueue_fills_in_the_defaults(sites: GatewayStore) -> None:
    item = sites.enqueue("county-a", "referral", b'{"resourceType":"Task"}',
                         source_site="township-a1")
    assert (item.site_id, item.kind, item.source_site) == ("county-a", "referral", "township-a1")
    assert item.content_type == "application/fhir+json"
    assert item.payload == b'{"resourceType":"Task"}'
    assert len(item.item_id) == 36 and item.seq > 0
    assert (item.delivered_at, item.acked_at, item.attempts) == (None, None, 0)
    assert item.created_at.tzinfo is dt.UTC


def test_enqueue_is_idempotent_on_item_id(sites: GatewayStore) -> None:
    first = sites.enqueue("county-a", "consult", b"one", item_id="req-1")
    again = sites.enqueue("county-a", "consult", b"two", item_id="req-1")
    assert again == first
    assert [i.item_id for i in sites.pending_for("county-a")] == ["req-1"]


def test_item_id_reused_for_another_site_is_a_conflict(sites: GatewayStore) -> None:
    sites.enqueue("county-a", "consult", b"one", item_id="req-1")
    with pytest.raises(Conflict, match="req-1"):
        sites.enqueue("county-b", "consult", b"one", item_id="req-1")
    assert sites.pending_for("county-b") == []


def test_enqueue_for_unknown_site(sites: GatewayStore) -> None:
    with pytest.raises(UnknownSite, match="federation site add"):
        sites.enqueue("ghost-9", "notice", b"{}")


def test_enqueue_unknown_kind(sites: GatewayStore) -> None:
    with pytest.raises(InvalidInput, match="kind"):
        sites.enqueue("county-a", "gossip", b"{}")


def test_pending_is_per_site_in_seq_order_after_the_cursor(sites: GatewayStore) -> None:
    ids = [sites.enqueue("county-a", "report", f"{i}".encode()).item_id for i in range(5)]
    sites.enqueue("county-b", "report", b"elsewhere")
    pending = sites.pending_for("county-a")
    assert [i.item_id for i in pending] == ids
    assert [i.seq for i in pending] == sorted(i.seq for i in pending)
    assert [i.item_id for i in sites.pending_for("county-a", after_seq=pending[1].seq)] == ids[2:]
    assert [i.item_id for i in sites.pending_for("county-a", limit=2)] == ids[:2]


def test_delivery_counts_attempts(sites: GatewayStore, t0: dt.datetime) -> None:
    a = sites.enqueue("county-a", "notice", b"a")
    b = sites.enqueue("county-a", "notice", b"b")
    assert sites.mark_delivered([a.item_id, b.item_id], t0) == 2
    assert sites.mark_delivered([a.item_id], t0 + S) == 1
    assert sites.mark_delivered([], t0) == 0
    got = {i.item_id: i for i in sites.pending_for("county-a")}
    assert (got[a.item_id].attempts, got[a.item_id].delivered_at) == (2, t0 + S)
    assert (got[b.item_id].attempts, got[b.item_id].delivered_at) == (1, t0)


def test_ack_removes_from_pending_and_keeps_the_first_time(sites: GatewayStore,
                                                            t0: dt.datetime) -> None:
    a = sites.enqueue("county-a", "referral", b"a")
    b = sites.enqueue("county-a", "referral", b"b")
    acked = sites.ack("county-a", a.item_id, t0)
    assert acked.acked_at == t0 and acked.acked_at.tzinfo is dt.UTC
    assert sites.ack("county-a", a.item_id, t0 + S).acked_at == t0
    assert [i.item_id for i in sites.pending_for("county-a")] == [b.item_id]
    assert sites.mark_delivered([a.item_id], t0 + S) == 0  # acked: nothing to redeliver


def test_ack_of_another_sites_item_is_not_found(sites: GatewayStore, t0: dt.datetime) -> None:
    item = sites.enqueue("county-a", "referral", b"a")
    with pytest.raises(NotFound, match="county-b"):
        sites.ack("county-b", item.item_id, t0)
    with pytest.raises(NotFound):
        sites.ack("county-a", "no-such-item", t0)
    assert [i.acked_at for i in sites.pending_for("county-a")] == [None]
