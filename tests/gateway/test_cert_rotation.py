"""Certificate rotation with a running gateway and nodes (real gRPC, mutual TLS, loopback):
calls keep succeeding while a node's or the gateway's certificate is replaced on disk, the
gateway records the node's new certificate, the old one works until it is revoked, and a
half-written pair is ignored."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest

from federation._proto.v1 import diagnostics_pb2, diagnostics_pb2_grpc
from federation.gateway.app import RunningGateway, start_gateway
from federation.nodes.agent import RunningNode, start_node
from federation.rpc.channels import secure_channel
from federation.rpc.rotating import RotatingChannel
from federation.security.ca import GATEWAY_SERVER_NAME
from federation.security.identity import identity_from_pem
from federation.security.tls import TlsMaterial
from tests.conftest import (
    Pki,
    bearer,
    gateway_settings,
    node_settings,
    served_serial,
    staff_token,
)


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Consortium:
    pki: Pki
    gateway: RunningGateway
    nodes: dict[str, RunningNode]

    def serial_on_disk(self, name: str) -> str:
        return identity_from_pem(self.pki.tls(name).cert.read_bytes()).serial

    def stored_serial(self, site: str) -> str:
        node = self.gateway.store.get_node(site)
        assert node is not None
        return node.cert_serial

    async def served_serial(self, port: int, client: str) -> str:
        """What a fresh TLS connection to ``port`` is shown, made as ``client``."""
        return await asyncio.to_thread(served_serial, port, self.pki.tls(client))


@pytest.fixture
async def running(private_pki: Pki, consortium, tmp_path: Path) -> AsyncIterator[Consortium]:
    gw = await start_gateway(gateway_settings(private_pki, f"sqlite:///{tmp_path}/gw.db",
                                              consortium))
    nodes: dict[str, RunningNode] = {}
    try:
        for site in ("county-a", "township-a1"):
            nodes[site] = await start_node(node_settings(private_pki, consortium, site,
                                                         gw.grpc_port, tmp_path))
        await asyncio.wait_for(asyncio.gather(
            *(n.link.status.connected_event.wait() for n in nodes.values())), timeout=10)
        yield Consortium(private_pki, gw, nodes)
    finally:
        for node in nodes.values():
            await node.stop(0.1)
        await gw.stop(0.2)


@dataclass
class CallLoop:
    """Calls in both directions, over and over, until stopped: the gateway asks each node
    for its capabilities (the gateway's channels to the nodes), and an operator checks
    itself at the gateway on a fresh connection each time (a new handshake every call)."""

    c: Consortium
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _gateway_to_nodes(self) -> None:
        while not self._stop.is_set():
            for site in self.c.nodes:
                endpoint = self.c.gateway.store.get_node(site).endpoint  # type: ignore[union-attr]
                await self._one(self.c.gateway.clients.capabilities(site, endpoint, timeout=5))
            await asyncio.sleep(0.02)

    async def _operator_to_gateway(self) -> None:
        operator = self.c.pki.material("tester")
        while not self._stop.is_set():
            channel = secure_channel(f"127.0.0.1:{self.c.gateway.grpc_port}", operator, 1 << 20,
                                     server_name=GATEWAY_SERVER_NAME)
            async with channel:
                stub = diagnostics_pb2_grpc.DiagnosticsStub(channel)
                await self._one(stub.CheckCaller(diagnostics_pb2.CheckCallerRequest(),
                                                 timeout=5))
            await asyncio.sleep(0.02)

    async def _one(self, call: Awaitable[object]) -> None:
        try:
            await call
            self.calls += 1
        except Exception as exc:  # every failure is a test failure, listed at the end
            self.failures.append(repr(exc))

    async def run(self) -> None:
        await asyncio.gather(self._gateway_to_nodes(), self._operator_to_gateway())

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
async def call_loop(running: Consortium) -> AsyncIterator[CallLoop]:
    loop = CallLoop(running)
    task = asyncio.create_task(loop.run())
    await _until(lambda: loop.calls >= 10, 10, "the first calls")
    yield loop
    loop.stop()
    await task


def _link_undisturbed(node: RunningNode) -> None:
    status = node.link.status
    assert (status.connected, status.sessions, status.last_error) == (True, 1, "")


async def test_node_rotation_mid_run_fails_no_call_and_the_gateway_sees_the_new_serial(
        running: Consortium, call_loop: CallLoop) -> None:
    c, node = running, running.nodes["county-a"]
    old = c.stored_serial("county-a")
    assert old == c.serial_on_disk("county-a")
    assert await c.served_serial(node.port, "gateway") == old

    rotated = await asyncio.to_thread(c.pki.ca.rotate_node, "county-a", c.pki.tls("county-a").cert,
                                      c.pki.tls("county-a").key)
    await _until(lambda: c.stored_serial("county-a") == rotated.serial, 10,
                 "the gateway to record the new certificate")
    before = call_loop.calls
    await _until(lambda: call_loop.calls >= before + 20, 10, "calls after the rotation")

    assert call_loop.failures == []
    assert await c.served_serial(node.port, "gateway") == rotated.serial  # the node's server
    _link_undisturbed(node)                                  # no reconnect: the same session
    assert node.link.status.certificate_rotations == 1
    events = [e.reason for e in c.gateway.store.node_events("county-a")]
    assert f"certificate changed: serial {rotated.serial} (was {old})" in events
    token = await asyncio.to_thread(staff_token, c.gateway, c.pki, site="township-a1",
                                    roles=("nurse",))
    answer = await asyncio.to_thread(
        httpx.get, f"http://127.0.0.1:{c.gateway.http_port}/api/consortium/sites/county-a",
        headers=bearer(token), timeout=5)
    assert answer.json()["node"]["cert_serial"] == rotated.serial   # what operators see
    assert any(e["reason"].startswith("certificate changed") for e in answer.json()["events"])
    # the inbox stream moved to the new connection: work still arrives
    await c.gateway.inbox.enqueue("county-a", "notice", b'{"n":1}', item_id="after-rotation")
    await _until(lambda: any(i.item_id == "after-rotation" for i in node.inbox.items()), 10,
                 "an inbox item after the rotation")
    _link_undisturbed(running.nodes["township-a1"])


async def test_the_old_certificate_works_during_the_overlap_until_it_is_revoked(
        running: Consortium, tmp_path: Path) -> None:
    c = running
    t = c.pki.tls("county-a")
    old = TlsMaterial.load(t.cert, t.key, t.ca)                 # kept aside, like a stale copy
    old_serial = identity_from_pem(old.cert_pem).serial
    rotated = await asyncio.to_thread(c.pki.ca.rotate_node, "county-a", t.cert, t.key)
    await _until(lambda: c.stored_serial("county-a") == rotated.serial, 10, "the new serial")

    async def check_caller(material: TlsMaterial) -> str:
        channel = secure_channel(f"127.0.0.1:{c.gateway.grpc_port}", material, 1 << 20,
                                 server_name=GATEWAY_SERVER_NAME)
        async with channel:
            reply = await diagnostics_pb2_grpc.DiagnosticsStub(channel).CheckCaller(
                diagnostics_pb2.CheckCallerRequest(), timeout=5)
        return reply.name

    assert await check_caller(old) == "county-a"                    # overlap: still accepted
    await asyncio.to_thread(c.pki.ca.revoke, old_serial, reason="superseded")

    async def refused() -> grpc.aio.AioRpcError:
        while True:
            try:
                await check_caller(old)
            except grpc.aio.AioRpcError as exc:
                return exc
            await asyncio.sleep(0.1)

    err = await asyncio.wait_for(refused(), timeout=10)  # the CRL is re-read every 2 s
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert f"serial {old_serial}" in err.details() and "revoked" in err.details()
    new = TlsMaterial.load(t.cert, t.key, t.ca)
    assert await check_caller(new) == "county-a"                    # the new one is not
    await asyncio.sleep(0.5)                                        # a few heartbeats on
    assert c.nodes["county-a"].link.status.connected
    assert c.stored_serial("county-a") == rotated.serial


async def test_a_half_written_pair_is_ignored_and_the_old_one_keeps_serving(
        running: Consortium, call_loop: CallLoop, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    c, node = running, running.nodes["county-a"]
    t = c.pki.tls("county-a")
    old = c.serial_on_disk("county-a")
    staged = c.pki.ca.issue_node("county-a", "county", tmp_path / "staged")
    with caplog.at_level(logging.WARNING, "federation.security.rotation"):
        shutil.copyfile(staged.cert_path, t.cert)              # the certificate without its key
        await asyncio.sleep(2.5)                                # well past a recheck
        assert await c.served_serial(node.port, "gateway") == old
        assert call_loop.failures == []
        assert c.stored_serial("county-a") == old
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "federation.security.rotation" and r.levelno == logging.WARNING]
    assert warnings and all("does not belong to the certificate" in w for w in warnings)
    assert all(f"keeping the certificate in force (serial {old}" in w for w in warnings)

    shutil.copyfile(staged.key_path, t.key)                     # the key follows: now it is whole
    await _until(lambda: c.stored_serial("county-a") == staged.serial, 10, "the new serial")
    assert await c.served_serial(node.port, "gateway") == staged.serial
    assert call_loop.failures == []
    _link_undisturbed(node)


async def test_gateway_rotation_with_nodes_connected(
        running: Consortium, call_loop: CallLoop, consortium, tmp_path: Path) -> None:
    c = running
    old = c.serial_on_disk("gateway")
    assert await c.served_serial(c.gateway.grpc_port, "tester") == old

    issued = await asyncio.to_thread(c.pki.ca.issue_gateway, c.pki.root / "gateway")
    assert c.gateway.tls_files is not None
    await _until(lambda: c.gateway.tls_files.current()[0] == 1, 10,
                 "the gateway to take its new certificate")
    assert await c.served_serial(c.gateway.grpc_port, "tester") == issued.serial
    before = call_loop.calls
    await _until(lambda: call_loop.calls >= before + 20, 10, "calls after the rotation")
    assert call_loop.failures == []

    # the gateway's channels to the nodes now present the new certificate too
    channels = list(c.gateway.clients._channels.values())
    assert channels and all(isinstance(ch, RotatingChannel) and ch.generation == 1
                            for ch in channels)
    for node in c.nodes.values():  # connected before: their sessions go on
        _link_undisturbed(node)
    # a node connecting now checks the gateway's new certificate
    late = await start_node(node_settings(c.pki, consortium, "county-b", c.gateway.grpc_port,
                                          tmp_path))
    try:
        await asyncio.wait_for(late.link.status.connected_event.wait(), 10)
    finally:
        await late.stop(0.1)
