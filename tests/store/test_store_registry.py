"""Sites and nodes: the consortium registry, registration, heartbeats and liveness."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from federation.errors import InvalidInput, NotFound, UnknownSite
from federation.store import GatewayStore, NodeRow

Register = Callable[..., NodeRow]

S = dt.timedelta(seconds=1)
CHINA = dt.timezone(dt.timedelta(hours=8))


def _utc(value: dt.datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)


# --------------------------------------------------------------------------- sites


def test_upsert_get_and_list_sites(sites: GatewayStore) -> None:
    site = sites.get_site("county-a")
    assert site is not None
    assert (site.name, site.tier, site.parent_site_id) == ("甲县人民医院", "county", "city-1")
    assert _utc(site.created_at)
    assert [s.site_id for s in sites.list_sites()] == [
        "city-1", "county-a", "county-b", "township-a1"]
    assert sites.get_site("nowhere") is None


def test_upsert_updates_in_place_and_keeps_created_at(sites: GatewayStore) -> None:
    before = sites.require_site("township-a1")
    after = sites.upsert_site("township-a1", "城关镇中心卫生院", "township", "county-b")
    assert (after.name, after.parent_site_id) == ("城关镇中心卫生院", "county-b")
    assert after.created_at == before.created_at
    assert len(sites.list_sites()) == 4


def test_require_site_says_how_to_add_it(store: GatewayStore) -> None:
    with pytest.raises(UnknownSite) as caught:
        store.require_site("county-z")
    assert caught.value.message == (
        "site 'county-z' is not a member of the consortium registry; "
        "add it with `federation site add`")


def test_parent_must_be_a_member(store: GatewayStore) -> None:
    with pytest.raises(UnknownSite, match="parent site 'city-9'"):
        store.upsert_site("county-a", "County A", "county", "city-9")
    assert store.get_site("county-a") is None


def test_parent_chain_may_not_loop(sites: GatewayStore) -> None:
    with pytest.raises(InvalidInput, match="cycle"):
        sites.upsert_site("city-1", "City", "city", "township-a1")
    with pytest.raises(InvalidInput, match="cycle"):
        sites.upsert_site("county-b", "County B", "county", "county-b")


@pytest.mark.parametrize("tier", ["province", "", "County"])
def test_tier_must_be_known(store: GatewayStore, tier: str) -> None:
    with pytest.raises(InvalidInput, match="tier must be one of"):
        store.upsert_site("x-1", "X", tier)


# --------------------------------------------------------------------------- nodes


def test_register_brings_node_online(
    sites: GatewayStore, register: Register, t0: dt.datetime
) -> None:
    node = register("county-a", capabilities=["search", "检验"])
    assert (node.state, node.registrations, node.heartbeat_seq) == ("online", 1, 0)
    assert node.capabilities == ("search", "检验")
    assert node.registered_at == node.last_heartbeat_at == node.state_changed_at == t0
    assert all(_utc(t) for t in (node.registered_at, node.last_heartbeat_at,
                                 node.state_changed_at))
    assert sites.get_node("county-a") == node
    [event] = sites.node_events("county-a")
    assert (event.from_state, event.to_state, event.reason) == (None, "online", "registered")


def test_reregistration_counts_and_updates(
    sites: GatewayStore, register: Register, t0: dt.datetime
) -> None:
    register("county-a")
    sites.heartbeat("county-a", 7, t0 + S)
    node = register("county-a", now=t0 + 5 * S, endpoint="10.0.0.9:50051",
                    software_version="0.2.0")
    assert (node.registrations, node.endpoint, node.software_version) == (
        2, "10.0.0.9:50051", "0.2.0")
    assert node.heartbeat_seq == 0
    assert node.state_changed_at == t0  # it never left 'online'
    latest = sites.node_events("county-a")[0]
    assert (latest.from_state, latest.to_state) == ("online", "online")
    assert "re-registered" in latest.reason


def test_register_unknown_site(store: GatewayStore, register: Register) -> None:
    with pytest.raises(UnknownSite, match="federation site add"):
        register("ghost-9")
    assert store.list_nodes() == []


def test_heartbeat_before_register_is_not_found(sites: GatewayStore, t0: dt.datetime) -> None:
    with pytest.raises(NotFound, match="must register"):
        sites.heartbeat("county-a", 1, t0)


def test_heartbeat_moves_time_and_sequence(
    sites: GatewayStore, register: Register, t0: dt.datetime
) -> None:
    register("county-a")
    node = sites.heartbeat("county-a", 3, t0 + 2 * S)
    assert (node.heartbeat_seq, node.last_heartbeat_at) == (3, t0 + 2 * S)
    late = sites.heartbeat("county-a", 2, t0 + S)  # a delayed one, via another replica
    assert late.last_heartbeat_at == t0 + 2 * S
    assert len(sites.node_events("county-a")) == 1


def test_silent_node_becomes_unreachable_then_recovers(
    sites: GatewayStore, register: Register, t0: dt.datetime
) -> None:
    register("county-a")
    register("county-b", now=t0 + 10 * S)
    assert sites.mark_unreachable(t0, t0 + 11 * S) == []  # strictly before the cutoff
    assert sites.mark_unreachable(t0 + 5 * S, t0 + 11 * S) == ["county-a"]
    assert sites.mark_unreachable(t0 + 5 * S, t0 + 12 * S) == []
    lost = sites.get_node("county-a")
    assert lost is not None and (lost.state, lost.state_changed_at) == ("unreachable", t0 + 11 * S)
    back = sites.heartbeat("county-a", 1, t0 + 20 * S)
    assert (back.state, back.state_changed_at) == ("online", t0 + 20 * S)
    moves = [(e.from_state, e.to_state) for e in reversed(sites.node_events("county-a"))]
    assert moves == [(None, "online"), ("online", "unreachable"), ("unreachable", "online")]


def test_offline_node_must_register_again(
    sites: GatewayStore, register: Register, t0: dt.datetime
) -> None:
    register("county-a")
    node = sites.mark_offline("county-a", t0 + S, "shut down by operator")
    assert (node.state, node.state_changed_at) == ("offline", t0 + S)
    sites.mark_offline("county-a", t0 + 2 * S, "again")  # no second event
    assert sites.mark_unreachable(t0 + 99 * S, t0 + 99 * S) == []
    with pytest.raises(NotFound, match="offline"):
        sites.heartbeat("county-a", 1, t0 + 3 * S)
    assert register("county-a", now=t0 + 4 * S).state == "online"
    reasons = [e.reason for e in reversed(sites.node_events("county-a"))]
    assert reasons[:2] == ["registered", "shut down by operator"]
    assert len(reasons) == 3


def test_mark_offline_without_node(sites: GatewayStore, t0: dt.datetime) -> None:
    with pytest.raises(NotFound):
        sites.mark_offline("county-a", t0, "decommissioned")


def test_consortium_view_pairs_every_site_with_its_node(
    sites: GatewayStore, register: Register
) -> None:
    register("county-a")
    view = {site.site_id: node for site, node in sites.consortium_view()}
    assert list(view) == ["city-1", "county-a", "county-b", "township-a1"]
    assert view["county-a"] is not None and view["county-a"].state == "online"
    assert view["city-1"] is None
    assert [n.site_id for n in sites.list_nodes()] == ["county-a"]


def test_node_events_filter_and_limit(
    sites: GatewayStore, register: Register, t0: dt.datetime
) -> None:
    for i, site_id in enumerate(["county-a", "county-b", "county-a"]):
        register(site_id, now=t0 + i * S)
    assert len(sites.node_events()) == 3
    assert [e.at for e in sites.node_events(limit=2)] == [t0 + 2 * S, t0 + S]
    assert {e.site_id for e in sites.node_events("county-b")} == {"county-b"}


def test_times_in_other_zones_come_back_as_the_same_instant_in_utc(
    sites: GatewayStore, register: Register, t0: dt.datetime
) -> None:
    beijing = dt.datetime(2025, 3, 1, 16, 0, tzinfo=CHINA)  # == t0
    node = register("county-a", now=beijing)
    assert node.registered_at == t0 and node.registered_at.tzinfo is dt.UTC
    assert sites.mark_unreachable(t0 + S, t0 + S) == ["county-a"]


def test_naive_times_are_refused(sites: GatewayStore, register: Register) -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        register("county-a", now=dt.datetime(2025, 3, 1, 8, 0))
