"""``federation health``: is the gateway or node on this machine serving? (exit 0 or 1)

For container health checks (Docker ``HEALTHCHECK``, Kubernetes exec probes) and systemd
watchdogs. Kubernetes' native gRPC probe speaks plaintext, but every federation endpoint
demands mutual TLS, so the probe calls the standard ``grpc.health.v1.Health/Check``
itself, as the process's own certificate (health checking is open to any consortium
certificate). For a gateway it also asks ``/healthz``, which checks the database.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from federation.rpc.channels import secure_channel
from federation.security.ca import GATEWAY_SERVER_NAME, node_server_name
from federation.security.tls import TlsMaterial
from federation.settings import config_kind, load_gateway_settings, load_node_settings

__all__ = ["probe", "local_address"]


def local_address(listen: str) -> str:
    """Where to reach a server on this machine that listens on ``listen``."""
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


async def _grpc_health(address: str, material: TlsMaterial, server_name: str, service: str,
                       timeout: float) -> str | None:
    async with secure_channel(address, material, 1 << 20, server_name=server_name) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return f"gRPC health on {address}: {exc.code().name} ({exc.details()})"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return (f"gRPC health on {address}: "
                f"{health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
    return None


def _http_health(listen: str, timeout: float) -> str | None:
    url = f"http://{local_address(listen)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            json.load(answer)
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code} {exc.read().decode(errors='replace')[:300]}"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None


def probe(config: Path, *, timeout: float = 3.0, grpc_only: bool = False) -> list[str]:
    """Problems found (empty when healthy) for the server ``config`` describes."""
    if config_kind(config) == "node":
        node = load_node_settings(config)
        material = TlsMaterial.load(node.tls.cert, node.tls.key, node.tls.ca)
        problem = asyncio.run(_grpc_health(local_address(node.listen), material,
                                           node_server_name(node.site_id), "", timeout))
        return [problem] if problem else []
    gw = load_gateway_settings(config)
    material = TlsMaterial.load(gw.tls.cert, gw.tls.key, gw.tls.ca)
    problems = [asyncio.run(_grpc_health(local_address(gw.grpc_listen), material,
                                         GATEWAY_SERVER_NAME, "federation.v1.Gateway",
                                         timeout))]
    if not grpc_only:
        problems.append(_http_health(gw.http_listen, timeout))
    return [p for p in problems if p]
