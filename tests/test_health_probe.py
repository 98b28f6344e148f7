"""``federation health`` (the container probe) against a real gateway and node over mTLS."""

from __future__ import annotations

import asyncio
import socket

from federation.health_probe import local_address, probe
from federation.settings import config_kind


def _gateway_toml(path, pki, grpc_port: int, http_port: int):
    t = pki.tls("gateway")
    path.write_text(f'grpc_listen = "0.0.0.0:{grpc_port}"\nhttp_listen = "127.0.0.1:{http_port}"\n'
                    f'[tls]\ncert = "{t.cert}"\nkey = "{t.key}"\nca = "{t.ca}"\n')
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_serving_gateway_and_node_are_healthy(gateway, start_nodes, pki, tmp_path):
    config = _gateway_toml(tmp_path / "gateway.toml", pki, gateway.grpc_port, gateway.http_port)
    assert config_kind(config) == "gateway"
    assert await asyncio.to_thread(probe, config) == []

    (node,) = await start_nodes(gateway, "township-a1")
    t = pki.tls("township-a1")
    site = tmp_path / "site.toml"
    site.write_text(f'site_id = "township-a1"\nlisten = "0.0.0.0:{node.port}"\n'
                    f'[tls]\ncert = "{t.cert}"\nkey = "{t.key}"\nca = "{t.ca}"\n'
                    f'[source]\nkind = "csv"\npath = "{tmp_path}"\n')
    assert config_kind(site) == "node"
    assert await asyncio.to_thread(probe, site) == []


async def test_a_gateway_that_is_not_there_is_unhealthy(pki, tmp_path):
    config = _gateway_toml(tmp_path / "gateway.toml", pki, _closed_port(), _closed_port())
    problems = await asyncio.to_thread(probe, config, timeout=1)
    assert len(problems) == 2
    assert "gRPC health" in problems[0] and "UNAVAILABLE" in problems[0]
    assert "/healthz" in problems[1]
    assert len(await asyncio.to_thread(probe, config, timeout=1, grpc_only=True)) == 1


def test_local_address_reaches_a_wildcard_listener():
    assert local_address("0.0.0.0:50051") == "127.0.0.1:50051"
    assert local_address("[::]:8080") == "127.0.0.1:8080"
    assert local_address("10.0.0.5:1") == "10.0.0.5:1"
