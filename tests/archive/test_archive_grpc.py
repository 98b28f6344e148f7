"""The Archive gRPC service for nodes: the reader is the calling node's site (from its
certificate), the practitioner and purpose come in the request; the role table refuses
anyone else; every read is in the exchange log."""

from __future__ import annotations

import json
from datetime import timedelta

import grpc
import pytest

from federation._proto.v1 import archive_pb2, archive_pb2_grpc
from federation.rpc.channels import secure_channel
from federation.security.ca import GATEWAY_SERVER_NAME
from tests.archive.conftest import NOW, encounter, lab, patient, put


@pytest.fixture
async def seeded(gateway):
    await put(gateway, "city-1", patient("city-1", "pc"),
              encounter("city-1", "e1", "pc", NOW - timedelta(days=3)),
              lab("city-1", "o1", "pc", "2823-3", 4.1, "mmol/L", NOW - timedelta(days=3)))
    await put(gateway, "county-a", patient("county-a", "pa", local="A1"),
              lab("county-a", "o2", "pa", "718-7", 120, "g/L", NOW - timedelta(days=1)))
    return gateway.archive_service.people.resolve("pa").person_id


def _stub(gateway, pki, name: str):
    channel = secure_channel(f"127.0.0.1:{gateway.grpc_port}", pki.material(name), 4 << 20,
                             server_name=GATEWAY_SERVER_NAME)
    return channel, archive_pb2_grpc.ArchiveStub(channel)


def _ctx(purpose="TREAT", practitioner="dr.zhou", reason=""):
    return archive_pb2.ReadContext(purpose_of_use=purpose, practitioner_id=practitioner,
                                   reason=reason)


async def test_nodes_read_the_archive_as_their_site(gateway, pki, seeded):
    channel, stub = _stub(gateway, pki, "city-1")
    async with channel:
        reply = await stub.Everything(archive_pb2.EverythingRequest(
            patient_id=seeded, context=_ctx(), count=1))
        bundle = json.loads(reply.bundle)
        assert reply.total == bundle["total"] == 5 and len(bundle["entry"]) == 1
        assert any(link["relation"] == "next" for link in bundle["link"])
        found = await stub.Search(archive_pb2.ArchiveSearchRequest(
            resource_type="Observation", context=_ctx(), parameters=[
                archive_pb2.SearchParameter(name="patient", value="pa"),
                archive_pb2.SearchParameter(name="code", value="http://loinc.org|718-7")]))
        assert [e["resource"]["id"] for e in json.loads(found.bundle)["entry"]] == ["o2"]
        summary = json.loads((await stub.Summary(archive_pb2.SummaryRequest(
            patient_id="pc", context=_ctx()))).bundle)
        assert summary["entry"][0]["resource"]["resourceType"] == "Composition"
        for request, code, words in [
                (archive_pb2.EverythingRequest(patient_id=seeded, context=_ctx(purpose="")),
                 grpc.StatusCode.PERMISSION_DENIED, "purpose of use is required"),
                (archive_pb2.EverythingRequest(patient_id=seeded, context=_ctx(practitioner="")),
                 grpc.StatusCode.INVALID_ARGUMENT, "practitioner_id"),
                (archive_pb2.EverythingRequest(patient_id="nobody", context=_ctx()),
                 grpc.StatusCode.NOT_FOUND, "master patient index")]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Everything(request)
            assert err.value.code() == code and words in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Search(archive_pb2.ArchiveSearchRequest(
                resource_type="Observation", context=_ctx(), parameters=[
                    archive_pb2.SearchParameter(name="patient", value="pa"),
                    archive_pb2.SearchParameter(name="value-quantity", value="5")]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "value-quantity" in err.value.details()
    # county-b has no relationship: refused, unless it breaks the glass
    channel, stub = _stub(gateway, pki, "county-b")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Everything(archive_pb2.EverythingRequest(patient_id=seeded,
                                                                context=_ctx()))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        ok = await stub.Everything(archive_pb2.EverythingRequest(
            patient_id=seeded, context=_ctx(purpose="ETREAT", reason="急诊转入")))
        assert ok.total == 5
    # an operator certificate is not a site: the role table refuses it
    channel, stub = _stub(gateway, pki, "tester")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Everything(archive_pb2.EverythingRequest(patient_id=seeded,
                                                                context=_ctx()))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    rows = [r for r in gateway.store.list_exchanges(limit=50) if r.operation.startswith("Archive/")]
    assert [(r.requester_site, r.outcome) for r in reversed(rows)] == [
        ("city-1", "ok"), ("city-1", "ok"), ("city-1", "ok"), ("city-1", "refused"),
        ("city-1", "error"), ("city-1", "error"), ("city-1", "error"),
        ("county-b", "refused"), ("county-b", "ok"),
        (None, "refused")]          # the operator certificate: logged, with no site
    *sites, operator = reversed(rows)
    assert {r.requester_id for r in sites} == {"dr.zhou@city-1", "dr.zhou@county-b",
                                               "(no practitioner)@city-1"}
    assert all(r.requester_kind == "node" for r in sites)
    assert (operator.requester_kind, operator.requester_id) == ("operator", "tester")
