"""Node registry: write-behind heartbeats must never hide a refusal or a transition."""

from __future__ import annotations

import datetime as dt

import pytest

from federation.errors import Conflict, PermissionDenied, UnknownSite
from federation.gateway.registry import NodeRegistry
from federation.security.identity import PeerIdentity
from federation.store import GatewayStore, make_engine, upgrade

T0 = dt.datetime(2026, 11, 21, 8, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def _peer(site: str, tier: str = "county", role: str = "node") -> PeerIdentity:
    return PeerIdentity(role=role, name=site, site_id=site if role == "node" else None,
                        tier=tier if role == "node" else None, serial="0a",
                        fingerprint_sha256="00", not_after=T0 + dt.timedelta(days=300))


@pytest.fixture
def setup(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/g.db")
    upgrade(engine)
    store = GatewayStore(engine)
    store.upsert_site("county-a", "东阳县人民医院", "county")
    clock = Clock()
    registry = NodeRegistry(store, unreachable_after=dt.timedelta(seconds=15), clock=clock)
    yield store, registry, clock
    store.dispose()


async def _register(registry, site="county-a", tier="county"):
    return await registry.register(_peer(site, tier), endpoint="127.0.0.1:9", software_version="t",
                                   capabilities=["Patient"])


async def test_buffered_heartbeats_reach_the_store_on_flush(setup):
    store, registry, clock = setup
    await _register(registry)
    clock.now = T0 + dt.timedelta(seconds=5)
    result = await registry.heartbeat(_peer("county-a"), 7)
    assert result.reregister is False
    assert store.get_node("county-a").heartbeat_seq == 0          # buffered, not yet written
    await registry.flush()
    node = store.get_node("county-a")
    assert node.heartbeat_seq == 7 and node.last_heartbeat_at == clock.now


async def test_sweep_flushes_first_so_a_live_node_is_not_marked_unreachable(setup):
    store, registry, clock = setup
    await _register(registry)
    clock.now = T0 + dt.timedelta(seconds=14)
    await registry.heartbeat(_peer("county-a"), 1)               # buffered
    clock.now = T0 + dt.timedelta(seconds=20)                     # 20 s after registration
    assert await registry.sweep_once() == []
    assert store.get_node("county-a").state == "online"
    clock.now = T0 + dt.timedelta(seconds=40)
    assert await registry.sweep_once() == ["county-a"]


async def test_node_taken_offline_elsewhere_is_told_to_reregister(setup):
    store, registry, clock = setup
    await _register(registry)
    await registry.heartbeat(_peer("county-a"), 1)
    store.mark_offline("county-a", T0, "decommissioned by another replica")
    await registry.heartbeat(_peer("county-a"), 2)               # buffered: not known yet
    await registry.flush()                                        # finds it offline
    result = await registry.heartbeat(_peer("county-a"), 3)
    assert result.reregister is True
    assert store.get_node("county-a").state == "offline"


async def test_unreachable_node_comes_back_online_through_write_through(setup):
    store, registry, clock = setup
    await _register(registry)
    clock.now = T0 + dt.timedelta(seconds=60)
    assert await registry.sweep_once() == ["county-a"]
    result = await registry.heartbeat(_peer("county-a"), 9)
    assert result.node is not None and result.node.state == "online"
    assert [e.to_state for e in store.node_events("county-a")][-1] == "online"


async def test_heartbeat_from_unregistered_node_asks_to_register(setup):
    store, registry, _ = setup
    assert (await registry.heartbeat(_peer("county-a"), 1)).reregister is True
    assert store.get_node("county-a") is None


@pytest.mark.parametrize(
    ("peer", "error"),
    [(_peer("ghost-1"), UnknownSite), (_peer("county-a", tier="city"), Conflict),
     (_peer("tool", role="operator"), PermissionDenied)],
)
async def test_registration_refusals(setup, peer, error):
    store, registry, _ = setup
    with pytest.raises(error):
        await registry.register(peer, endpoint="127.0.0.1:9", software_version="t",
                                capabilities=[])
    assert store.list_nodes() == []
