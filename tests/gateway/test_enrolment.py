"""Enrolment over real mutual TLS: the gateway knows a node only by its certificate."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import grpc
import pytest

from federation._proto.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from federation.rpc.channels import secure_channel
from federation.security.ca import GATEWAY_SERVER_NAME
from tests.conftest import bearer, staff_token


def _stub(pki, name: str, port: int, max_bytes: int = 16 << 20):
    channel = secure_channel(f"127.0.0.1:{port}", pki.material(name), max_bytes,
                             server_name=GATEWAY_SERVER_NAME)
    return channel, gateway_pb2_grpc.GatewayStub(channel)


async def _register(pki, name: str, port: int, endpoint: str = "127.0.0.1:1"):
    channel, stub = _stub(pki, name, port)
    async with channel:
        return await stub.Register(gateway_pb2.RegisterRequest(endpoint=endpoint), timeout=5)


async def test_node_registers_as_the_site_in_its_certificate(gateway, pki):
    reply = await _register(pki, "county-a", gateway.grpc_port)
    assert reply.site_id == "county-a"
    assert reply.tier == common_pb2.TIER_COUNTY
    assert reply.registrations == 1
    node = gateway.store.get_node("county-a")
    assert node.state == "online" and node.endpoint == "127.0.0.1:1"
    again = await _register(pki, "county-a", gateway.grpc_port, endpoint="127.0.0.1:2")
    assert again.registrations == 2
    assert gateway.store.get_node("county-a").endpoint == "127.0.0.1:2"


async def test_heartbeat_before_registration_asks_to_register(gateway, pki):
    channel, stub = _stub(pki, "township-a1", gateway.grpc_port)
    async with channel:
        reply = await stub.Heartbeat(gateway_pb2.HeartbeatRequest(sequence=1), timeout=5)
    assert reply.reregister is True
    assert gateway.store.get_node("township-a1") is None


async def test_unknown_site_is_refused_with_a_clear_status(gateway, pki):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _register(pki, "ghost-9", gateway.grpc_port)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ghost-9" in err.value.details()
    assert "not a member of the consortium registry" in err.value.details()
    assert gateway.store.get_node("ghost-9") is None


async def test_tier_in_certificate_must_match_the_registry(gateway, pki):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _register(pki, "wrong-tier", gateway.grpc_port)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "county" in err.value.details() and "township" in err.value.details()
    assert gateway.store.get_node("county-b") is None


@pytest.mark.parametrize("cert", ["foreign", "expired"])
async def test_foreign_and_expired_certificates_fail_the_handshake(gateway, pki, cert):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _register(pki, cert, gateway.grpc_port)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert gateway.store.get_node("county-a") is None


async def test_client_without_certificate_is_refused(gateway, pki):
    creds = grpc.ssl_channel_credentials(root_certificates=pki.material("tester").ca_pem)
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{gateway.grpc_port}", creds,
        options=[("grpc.ssl_target_name_override", GATEWAY_SERVER_NAME)])
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gateway_pb2_grpc.GatewayStub(channel).Register(
                gateway_pb2.RegisterRequest(endpoint="127.0.0.1:1"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_is_refused(gateway):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gateway_pb2_grpc.GatewayStub(channel).Register(
                gateway_pb2.RegisterRequest(endpoint="127.0.0.1:1"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_revoked_certificate_is_refused_without_restart(private_pki, consortium, tmp_path):
    from federation.gateway.app import start_gateway
    from tests.conftest import gateway_settings

    gw = await start_gateway(gateway_settings(private_pki, f"sqlite:///{tmp_path}/g.db", consortium))
    try:
        await _register(private_pki, "county-a", gw.grpc_port)   # works before revocation
        private_pki.ca.revoke(site_id="county-a", reason="key_compromise")
        await asyncio.sleep(2.2)                                  # the CRL is re-read within 2 s
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _register(private_pki, "county-a", gw.grpc_port)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in err.value.details()
        assert gw.store.get_node("county-a").registrations == 1  # the refused call changed nothing
    finally:
        await gw.stop(0.1)


@pytest.mark.parametrize(
    ("cert", "method"),
    [("tester", "Register"), ("county-a", "SearchPatients")],
)
async def test_roles_are_enforced_per_method(gateway, pki, cert, method):
    channel, stub = _stub(pki, cert, gateway.grpc_port)
    request = (gateway_pb2.RegisterRequest(endpoint="127.0.0.1:1") if method == "Register"
               else gateway_pb2.FederatedSearchRequest(
                   query=common_pb2.PatientQuery(gender="male")))
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await getattr(stub, method)(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not call" in err.value.details()


async def test_oversize_message_is_refused_and_changes_nothing(pki, consortium, tmp_path):
    from federation.gateway.app import start_gateway
    from tests.conftest import gateway_settings

    gw = await start_gateway(gateway_settings(pki, f"sqlite:///{tmp_path}/g.db", consortium,
                                              max_message_bytes=64 * 1024))
    try:
        channel, stub = _stub(pki, "county-a", gw.grpc_port)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Register(gateway_pb2.RegisterRequest(
                    endpoint="127.0.0.1:1", software_version="x" * 100_000), timeout=5)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert gw.store.get_node("county-a") is None
            ok = await stub.Register(gateway_pb2.RegisterRequest(endpoint="127.0.0.1:1"), timeout=5)
            assert ok.registrations == 1                    # the gateway still serves
    finally:
        await gw.stop(0.1)


async def test_http_consortium_view_and_health(gateway, pki):
    await _register(pki, "city-1", gateway.grpc_port)
    base = f"http://127.0.0.1:{gateway.http_port}"
    token = await asyncio.to_thread(staff_token, gateway, pki, roles=("nurse",))

    def get(path: str):
        try:
            req = urllib.request.Request(base + path, headers=bearer(token))
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    status, body = await asyncio.to_thread(get, "/healthz")
    assert status == 200 and json.loads(body)["checks"]["database"] == "ok"
    status, body = await asyncio.to_thread(get, "/api/consortium")
    sites = {s["site_id"]: s for s in json.loads(body)["sites"]}
    assert len(sites) == 6
    assert sites["city-1"]["tier"] == "city" and sites["city-1"]["node"]["state"] == "online"
    assert sites["county-a"]["node"] is None
    status, body = await asyncio.to_thread(get, "/api/consortium/sites/nowhere")
    outcome = json.loads(body)
    assert status == 404 and outcome["resourceType"] == "OperationOutcome"
    assert "nowhere" in outcome["issue"][0]["diagnostics"]
    status, body = await asyncio.to_thread(get, "/metrics")
    text = body.decode()
    assert status == 200
    assert 'federation_rpc_seconds_count{code="OK",component="gateway",method="Register"}' in text
    assert 'federation_nodes{state="online"}' in text


async def test_grpc_health_and_reflection_are_served(gateway, pki):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel, _ = _stub(pki, "tester", gateway.grpc_port)
    async with channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="federation.v1.Gateway"), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        async for reply in stream:
            names = {s.name for s in reply.list_services_response.service}
            break
    assert "federation.v1.Gateway" in names


async def test_client_side_error_explains_a_refused_handshake(gateway, pki):
    from federation.client import GatewayClient
    from federation.errors import Unavailable
    from federation.nodes.model import PatientQuery

    async with GatewayClient(f"127.0.0.1:{gateway.grpc_port}", pki.material("foreign")) as c:
        with pytest.raises(Unavailable, match="TLS handshake with gateway .* failed"):
            await c.search(PatientQuery(gender="male"), timeout=5)


async def test_gateway_serves_fhir_translate_and_normalize(gateway, pki):
    base = f"http://127.0.0.1:{gateway.http_port}/fhir"
    token = await asyncio.to_thread(staff_token, gateway, pki)

    def call(path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data,
                                     headers={"Content-Type": "application/json",
                                              **bearer(token)})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = await asyncio.to_thread(call, "/ConceptMap/$translate?code=x")
    assert status == 400 and body["resourceType"] == "OperationOutcome"
    status, body = await asyncio.to_thread(
        call, "/Condition/$normalize", {"text": "左侧中央型肺鳞癌并纵膈淋巴结转移"})
    assert status == 200 and body["resourceType"] == "Condition"
    codes = [c["code"] for c in body["code"]["coding"]]
    assert any(code.startswith("C34") for code in codes)
    assert body["code"]["text"] == "左侧中央型肺鳞癌并纵膈淋巴结转移"
