"""The Audit service over mutual TLS: receipts for nodes, proofs, refusals in the trail,
and a gateway that forks its log caught by a node's receipts."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from audit_factories import rebuild_derived
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import text

from federation._proto.v1 import audit_pb2, audit_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from federation.audit.merkle import leaf_hash, verify_inclusion
from federation.audit.receipts import fetch_receipts, verify_receipts
from federation.audit.service import sth_from_proto
from federation.audit.tree_heads import verify_tree_head
from federation.audit.verify import verify_store
from federation.errors import IntegrityError
from federation.fhir_systems import local_patient_id_system
from federation.nodes.receipts import NodeReceipts
from federation.rpc.channels import secure_channel
from federation.security.ca import GATEWAY_SERVER_NAME

WEI = {"name": "张伟", "sex": "male", "birth_date": "1980-05-12", "phone": "13800138000"}


def _channel(gateway, pki, name: str) -> grpc.aio.Channel:
    return secure_channel(f"127.0.0.1:{gateway.grpc_port}", pki.material(name), 4 << 20,
                          server_name=GATEWAY_SERVER_NAME)


@pytest.fixture
async def exchanges(gateway, pki):
    """county-b resolves a patient three times and is refused a search once."""
    await asyncio.to_thread(gateway.identity.link, "county-a", "pa-1", WEI, local_id="A0001")
    await asyncio.to_thread(gateway.identity.link, "city-1", "pc-1", WEI, local_id="C0001")
    async with _channel(gateway, pki, "county-b") as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for _ in range(3):
            await stub.ResolvePatient(gateway_pb2.PixQuery(
                system=local_patient_id_system("county-a"), value="A0001"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SearchPatients(gateway_pb2.FederatedSearchRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_every_exchange_is_an_audit_event_and_refusals_too(gateway, exchanges, pki) -> None:
    rows = await asyncio.to_thread(gateway.store.list_exchanges)
    assert [r.outcome for r in reversed(rows)] == ["ok", "ok", "ok", "refused"]
    head = await asyncio.to_thread(gateway.audit.head)
    assert head.tree_size == 4
    leaves = await asyncio.to_thread(gateway.audit.leaves, 0, 4)
    events = [AuditEvent.model_validate_json(leaf.leaf) for leaf in leaves]
    assert [e.outcome for e in events] == ["0", "0", "0", "4"]
    assert events[3].subtype[0].code == "Gateway/SearchPatients"
    assert events[0].agent[0].location.identifier.value == "county-b"
    for leaf in leaves:     # no resident ID, phone or name in the trail
        assert b"13800138000" not in leaf.leaf and "张伟".encode() not in leaf.leaf
    report = await asyncio.to_thread(verify_store, gateway.store.engine, pki.ca.ca_pem)
    assert report.ok, report.findings


async def test_a_node_receives_checks_and_keeps_its_receipts(gateway, exchanges, pki,
                                                             tmp_path) -> None:
    store = NodeReceipts(tmp_path / "receipts.sqlite")
    async with _channel(gateway, pki, "county-b") as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        assert await fetch_receipts(stub, store, pki.ca.ca_pem, "county-b") == 4
        assert await fetch_receipts(stub, store, pki.ca.ca_pem, "county-b") == 0
        kept = store.receipts()
        assert [r.leaf_index for r in kept] == [0, 1, 2, 3]
        sth = store.latest_tree_head()
        assert sth is not None and sth.tree_size == 4
        verify_tree_head(sth, pki.ca.ca_pem)
        # the gateway's proofs agree with what the node holds
        proof = await stub.GetInclusionProof(audit_pb2.InclusionProofRequest(leaf_index=2))
        verify_inclusion(kept[2].leaf_hash, 2, proof.tree_size, list(proof.audit_path),
                         sth.root_hash)
        # more exchanges: the next fetch proves the new head extends the kept one
        await asyncio.to_thread(gateway.identity.link, "county-b", "pb-1", WEI, local_id="B1")
        g = gateway_pb2_grpc.GatewayStub(channel)
        await g.ResolvePatient(gateway_pb2.PixQuery(
            system=local_patient_id_system("county-b"), value="B1"), timeout=10)
        assert await fetch_receipts(stub, store, pki.ca.ca_pem, "county-b") == 1
        report = await verify_receipts(stub, store, pki.ca.ca_pem, "county-b")
        assert report.ok, report.findings
        assert (report.leaves_checked, report.tree_heads_checked) == (5, 2)
    # another node has no part in these exchanges: no receipts for it
    other = NodeReceipts(tmp_path / "other.sqlite")
    async with _channel(gateway, pki, "county-a") as channel:
        assert await fetch_receipts(audit_pb2_grpc.AuditStub(channel), other, pki.ca.ca_pem,
                                    "county-a") == 0


async def test_receipts_are_for_nodes_only_and_bad_requests_are_refused(gateway, exchanges,
                                                                        pki) -> None:
    async with _channel(gateway, pki, "tester") as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.FetchReceipts(audit_pb2.FetchReceiptsRequest(), timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        sth = sth_from_proto(await stub.GetSignedTreeHead(
            audit_pb2.GetSignedTreeHeadRequest(fresh=True), timeout=10))
        assert sth.tree_size == 5          # the refusal above is in the trail too
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.GetConsistencyProof(audit_pb2.ConsistencyProofRequest(
                first=9, second=3), timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.GetInclusionProof(audit_pb2.InclusionProofRequest(leaf_index=99),
                                         timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_forked_gateway_log_is_caught_by_the_nodes_receipts(gateway, exchanges, pki,
                                                                    tmp_path) -> None:
    store = NodeReceipts(tmp_path / "receipts.sqlite")
    engine = gateway.store.engine
    async with _channel(gateway, pki, "county-b") as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        await fetch_receipts(stub, store, pki.ca.ca_pem, "county-b")
        # the operators rewrite leaf 1 (whose exchange the node took part in), recompute
        # every hash, drop the old tree heads and let the gateway sign the new history
        [leaf] = await asyncio.to_thread(gateway.audit.leaves, 1, 2)
        event = json.loads(leaf.leaf)
        event["outcome"] = "4"
        forged = json.dumps(event, ensure_ascii=False, sort_keys=True,
                            separators=(",", ":")).encode()
        with engine.begin() as conn:
            conn.execute(text("UPDATE audit_leaf SET leaf = :l, leaf_hash = :h WHERE idx = 1"),
                         {"l": forged, "h": leaf_hash(forged)})
            conn.execute(text("DELETE FROM audit_tree_head"))
        await asyncio.to_thread(rebuild_derived, gateway.audit, engine)
        forked = await asyncio.to_thread(gateway.tree_heads.sign_head)
        verify_tree_head(forked, pki.ca.ca_pem)          # validly signed, but a fork
        report = await verify_receipts(stub, store, pki.ca.ca_pem, "county-b")
        assert not report.ok
        assert report.first is not None
        assert (report.first.kind, report.first.leaf) == ("forked-leaf", 1)
        kept = store.count()
        with pytest.raises(IntegrityError, match="fork|rewritten"):
            await fetch_receipts(stub, store, pki.ca.ca_pem, "county-b")
        assert store.count() == kept


async def test_a_running_node_keeps_receipts_and_verifies_them_from_the_command_line(
        gateway, pki, consortium, tmp_path) -> None:
    from dataclasses import replace

    from click.testing import CliRunner

    from federation.cli import cli
    from federation.client import GatewayClient
    from federation.nodes.agent import start_node
    from federation.nodes.model import PatientQuery
    from tests.conftest import node_settings

    settings = replace(node_settings(pki, consortium, "county-b", gateway.grpc_port, tmp_path),
                       audit_receipts_interval_ms=100)
    node = await start_node(settings)
    try:
        await asyncio.wait_for(node.link.status.connected_event.wait(), 10)
        async with GatewayClient(f"127.0.0.1:{gateway.grpc_port}", pki.material("tester")) as c:
            await c.search(PatientQuery(gender="male"), site_ids=["county-b"])
        for _ in range(200):
            if node.link.status.receipts >= 1:
                break
            await asyncio.sleep(0.05)
        assert node.link.status.receipts >= 1 and node.link.status.audit_alarm == ""
        kept = node.receipts.receipts()
        assert any(json.loads(r.leaf)["subtype"][0]["code"] == "NodeAgent/SearchPatients"
                   for r in kept)
        spec = next(s for s in consortium.sites if s.site_id == "county-b")
        t = settings.tls
        config = tmp_path / "site.toml"
        config.write_text(
            f'site_id = "county-b"\ngateway = "127.0.0.1:{gateway.grpc_port}"\n'
            f'state_dir = "{settings.state_dir}"\n[tls]\ncert = "{t.cert}"\nkey = "{t.key}"\n'
            f'ca = "{t.ca}"\n[source]\nkind = "{spec.source_kind}"\npath = "{spec.source_path}"\n'
            + (f'mapping = "{spec.mapping}"\n' if spec.mapping else ""))
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["audit", "verify", "--node", str(config)])
        assert result.exit_code == 0, result.output
        assert "ok:" in result.output
    finally:
        await node.stop(0.1)
