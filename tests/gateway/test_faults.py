"""Faults: a gateway restart under running nodes, a killed node process, the inbox."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federation.gateway.app import start_gateway
from tests.conftest import gateway_settings, node_settings


async def _until(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_inbox_items_reach_the_node_once(gateway, start_nodes):
    (node,) = await start_nodes(gateway, "township-a1")
    first = await gateway.inbox.enqueue("township-a1", "notice", b'{"n":1}', item_id="item-1")
    await gateway.inbox.enqueue("township-a1", "notice", b'{"n":1}', item_id="item-1")  # dup
    await gateway.inbox.enqueue("township-a1", "referral", b'{"n":2}', source_site="county-a")
    await _until(lambda: len(node.inbox.items()) == 2, 5, "two items in the node inbox")
    items = node.inbox.items()
    assert [i.kind for i in items] == ["notice", "referral"]
    assert items[0].item_id == first.item_id and items[0].payload == b'{"n":1}'
    assert items[1].source_site == "county-a"
    await _until(lambda: not gateway.store.pending_for("township-a1", 0, 10), 5, "acks")


async def test_gateway_restart_nodes_reconnect_and_nothing_is_lost(pki, consortium, tmp_path):
    settings = gateway_settings(pki, f"sqlite:///{tmp_path}/gateway.db", consortium)
    gw = await start_gateway(settings)
    port = gw.grpc_port
    from federation.nodes.agent import start_node

    node = await start_node(node_settings(pki, consortium, "county-b", port, tmp_path))
    try:
        await asyncio.wait_for(node.link.status.connected_event.wait(), 10)
        await gw.stop(0.2)
        await _until(lambda: not node.link.status.connected, 10, "the node to notice")
        # while the gateway is down, another replica (same store) queues work for the node
        from federation.store import GatewayStore, make_engine

        other_replica = GatewayStore(make_engine(settings.database_url))
        queued = other_replica.enqueue("county-b", "consult", b"{}", source_site="city-1")
        gw = await start_gateway(settings.__class__(**{**_fields(settings),
                                                       "grpc_listen": f"127.0.0.1:{port}"}))
        await _until(lambda: node.link.status.connected, 15, "the node to reconnect")
        assert gw.store.get_node("county-b").registrations == 2
        await _until(lambda: [i.item_id for i in node.inbox.items()] == [queued.item_id], 10,
                     "the queued item")
        assert gw.store.get_node("county-b").state == "online"
    finally:
        await node.stop(0.1)
        await gw.stop(0.1)


def _fields(settings) -> dict:
    return {f: getattr(settings, f) for f in settings.__dataclass_fields__}


@pytest.mark.slow
async def test_killed_node_is_marked_unreachable_in_time(gateway, pki, consortium, tmp_path):
    """A node process killed with SIGKILL is marked unreachable within
    unreachable_after (1 s here) plus one sweep; the transition is recorded."""
    config = tmp_path / "site.toml"
    s = node_settings(pki, consortium, "township-b1", gateway.grpc_port, tmp_path)
    config.write_text("\n".join([
        f'site_id = "{s.site_id}"', f'listen = "{s.listen}"', f'gateway = "{s.gateway}"',
        f'state_dir = "{s.state_dir}"', "[tls]", f'cert = "{s.tls.cert}"', f'key = "{s.tls.key}"',
        f'ca = "{s.tls.ca}"', "[source]", f'kind = "{s.source.kind}"', f'path = "{s.source.path}"',
        *([f'mapping = "{s.source.mapping}"'] if s.source.mapping else []),
    ]) + "\n")
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "federation", "node", "serve", "--config",
                             str(config)], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        def online() -> bool:
            node = gateway.store.get_node("township-b1")
            return node is not None and node.state == "online"

        await _until(online, 30, "the node process to register")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        took = await _until(lambda: gateway.store.get_node("township-b1").state == "unreachable",
                            5, "unreachable")
        assert took < 1.0 + 0.5 + 0.5   # unreachable_after + heartbeat slack + one sweep
        events = gateway.store.node_events("township-b1", 10)
        assert "unreachable" in [e.to_state for e in events]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert "Traceback" not in Path(tmp_path / "node.log").read_text()


async def test_node_with_expired_certificate_refuses_to_start(pki, consortium, tmp_path):
    from federation.errors import ConfigError
    from federation.nodes.agent import start_node

    settings = node_settings(pki, consortium, "county-a", 1, tmp_path, cert_name="expired")
    with pytest.raises(ConfigError, match="expired on .*federation ca issue"):
        await start_node(settings)


async def test_node_whose_certificate_names_another_site_refuses_to_start(pki, consortium,
                                                                          tmp_path):
    from federation.errors import ConfigError
    from federation.nodes.agent import start_node

    settings = node_settings(pki, consortium, "county-a", 1, tmp_path, cert_name="city-1")
    with pytest.raises(ConfigError, match="site_id is 'county-a' but the certificate"):
        await start_node(settings)
