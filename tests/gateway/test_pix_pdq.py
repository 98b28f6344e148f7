"""PIX and PDQ on a real gateway: FHIR REST (IHE PIXm, PDQm, the EMPI's Person) over the
gateway's HTTP port, and ResolvePatient / FindPatients over gRPC with mutual TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import grpc
import httpx
import pytest

from federation._proto.v1 import gateway_pb2, gateway_pb2_grpc
from federation.archive.store import StoredChange
from federation.fhir_systems import (
    EMPI_PERSON_SYSTEM,
    RESIDENT_ID_SYSTEM,
    local_patient_id_system,
    site_urn,
)
from federation.rpc.channels import secure_channel
from federation.security.ca import GATEWAY_SERVER_NAME
from tests.conftest import bearer, staff_token

WEI_ID = "110101198005120014"
NA_ID = "310104199203030029"
WEI = {"name": "张伟", "sex": "male", "birth_date": "1980-05-12", "national_id": WEI_ID,
       "phone": "13800138000", "address": "北京市东城区东华门街道1号"}
NA = {"name": "李娜", "sex": "female", "birth_date": "1992-03-03", "national_id": NA_ID,
      "phone": "13900139000"}


async def _link(gateway, site: str, record: str, fields: dict, local: str) -> str:
    outcome = await asyncio.to_thread(gateway.identity.link, site, record, fields,
                                      local_id=local)
    assert outcome.person_id
    return outcome.person_id


@pytest.fixture
async def seeded(gateway):
    """Wei at county-a (A0001), township-a1 (T0001) and city-1 (C0001, synced into the
    archive with its site Patient); Na at county-a (A0002) and county-b (B0001)."""
    wei = await _link(gateway, "county-a", "pa-1", WEI, "A0001")
    assert await _link(gateway, "township-a1", "pt-1", WEI | {"name": "张 伟"}, "T0001") == wei
    patient = {"resourceType": "Patient", "id": "pc-1", "meta": {"source": site_urn("city-1")},
               "identifier": [{"system": local_patient_id_system("city-1"), "value": "C0001"},
                              {"system": RESIDENT_ID_SYSTEM, "value": WEI_ID}],
               "name": [{"use": "official", "text": "张伟", "family": "张", "given": ["伟"]}],
               "gender": "male", "birthDate": "1980-05-12",
               "telecom": [{"system": "phone", "value": "13800138000"}]}
    await asyncio.to_thread(
        gateway.archive.apply, "city-1", "e1",
        [StoredChange("Patient", "pc-1", 1, False, "pc-1", json.dumps(patient).encode())],
        after=1, node_head=1, rejected=0, now=dt.datetime.now(dt.UTC), caught_up=True)
    assert await asyncio.to_thread(gateway.identity.person_of,
                                   _ref("city-1", "pc-1")) == wei
    na = await _link(gateway, "county-a", "pa-2", NA, "A0002")
    assert await _link(gateway, "county-b", "pb-1", NA, "B0001") == na
    assert na != wei
    return {"wei": wei, "na": na}


def _ref(site: str, record: str):
    from federation.identity.index import RecordRef

    return RecordRef(site, record)


@pytest.fixture
async def http(gateway, pki):
    """A county doctor signed in for treatment."""
    token = await asyncio.to_thread(staff_token, gateway, pki)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}",
                                 timeout=10, headers=bearer(token)) as client:
        yield client


def _params(body: dict) -> list[tuple[str, dict]]:
    return [(p["name"], p.get("valueIdentifier") or p.get("valueReference"))
            for p in body["parameter"]]


def _issue(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    return body["issue"][0]["diagnostics"]


# ---------------------------------------------------------------------- PIXm


async def test_pixm_returns_the_other_sites_numbers_and_the_person(seeded, http) -> None:
    r = await http.get("/fhir/Patient/$ihe-pix", params={
        "sourceIdentifier": f"{local_patient_id_system('county-a')}|A0001"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Parameters"
    got = _params(body)
    identifiers = {(v["system"], v["value"]) for n, v in got if n == "targetIdentifier"}
    assert identifiers == {(local_patient_id_system("city-1"), "C0001"),
                           (local_patient_id_system("township-a1"), "T0001"),
                           (EMPI_PERSON_SYSTEM, seeded["wei"])}
    targets = {(v["reference"], v["identifier"]["system"]) for n, v in got if n == "targetId"}
    assert targets == {("Patient/pc-1", site_urn("city-1")),
                       ("Patient/pt-1", site_urn("township-a1"))}
    assert all("township-a1" in v["display"] or "city-1" in v["display"]
               for n, v in got if n == "targetId")
    # the source record itself and the other person's records are not cross-references
    assert ("Patient/pa-1", site_urn("county-a")) not in targets
    assert "A0002" not in r.text and "B0001" not in r.text


async def test_pixm_by_resident_id_and_by_fhir_id(seeded, http) -> None:
    r = await http.get("/fhir/Patient/$ihe-pix",
                       params={"sourceIdentifier": f"{RESIDENT_ID_SYSTEM}|{NA_ID}"})
    assert r.status_code == 200, r.text
    ids = {(v["system"], v["value"]) for n, v in _params(r.json()) if n == "targetIdentifier"}
    # a resident ID is no site's own number: every record of the person comes back
    assert ids == {(local_patient_id_system("county-a"), "A0002"),
                   (local_patient_id_system("county-b"), "B0001"),
                   (EMPI_PERSON_SYSTEM, seeded["na"])}
    r = await http.get("/fhir/Patient/$ihe-pix",
                       params={"sourceIdentifier": f"{site_urn('county-b')}|pb-1"})
    refs = [v["reference"] for n, v in _params(r.json()) if n == "targetId"]
    assert refs == ["Patient/pa-2"]


async def test_pixm_target_system_filters(seeded, http) -> None:
    source = f"{local_patient_id_system('county-a')}|A0001"
    r = await http.get("/fhir/Patient/$ihe-pix", params={
        "sourceIdentifier": source, "targetSystem": local_patient_id_system("city-1")})
    got = _params(r.json())
    assert got == [
        ("targetIdentifier", {"system": local_patient_id_system("city-1"), "value": "C0001"}),
        ("targetId", got[1][1])]
    assert got[1][1]["reference"] == "Patient/pc-1"
    r = await http.get("/fhir/Patient/$ihe-pix", params={
        "sourceIdentifier": source, "targetSystem": EMPI_PERSON_SYSTEM})
    assert _params(r.json()) == [("targetIdentifier", {"system": EMPI_PERSON_SYSTEM,
                                                       "value": seeded["wei"]})]
    r = await http.get("/fhir/Patient/$ihe-pix", params=[
        ("sourceIdentifier", source), ("targetSystem", site_urn("township-a1")),
        ("targetSystem", EMPI_PERSON_SYSTEM)])
    values = {v.get("value") or v.get("reference") for _, v in _params(r.json())}
    assert values == {"T0001", "Patient/pt-1", seeded["wei"]}
    # a target system nobody issues: 403 as PIXm says
    r = await http.get("/fhir/Patient/$ihe-pix", params={
        "sourceIdentifier": source, "targetSystem": "urn:oid:1.2.3"})
    assert "targetSystem 'urn:oid:1.2.3'" in _issue(r, 403, "code-invalid")


async def test_pixm_errors_are_operation_outcomes(seeded, http) -> None:
    r = await http.get("/fhir/Patient/$ihe-pix", params={
        "sourceIdentifier": f"{local_patient_id_system('county-a')}|NOPE"})
    _issue(r, 404, "not-found")
    r = await http.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": "A0001"})
    message = _issue(r, 400, "invalid")
    assert "<system>|<value>" in message and RESIDENT_ID_SYSTEM in message
    r = await http.get("/fhir/Patient/$ihe-pix",
                       params={"sourceIdentifier": "urn:oid:9.9|A0001"})
    assert "unknown identifier system 'urn:oid:9.9'" in _issue(r, 400, "invalid")
    r = await http.get("/fhir/Patient/$ihe-pix",
                       params={"sourceIdentifier": f"{local_patient_id_system('mars-1')}|1"})
    assert "not a member" in _issue(r, 400, "invalid")
    r = await http.get("/fhir/Patient/$ihe-pix",
                       params={"sourceIdentifier": "urn:federation:site:county-a:encounter-id|1"})
    assert "does not identify patients" in _issue(r, 400, "invalid")
    r = await http.get("/fhir/Patient/$ihe-pix")
    assert "sourceIdentifier is required" in _issue(r, 400, "invalid")
    r = await http.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": "a|b", "x": "1"})
    assert "'x' is not supported" in _issue(r, 400, "invalid")


# ---------------------------------------------------------------------- PDQm


async def test_pdqm_returns_site_records_with_person_ids(seeded, http) -> None:
    r = await http.get("/fhir/Patient", params={"name": "张伟", "birthdate": "1980-05-12"})
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    entries = bundle["entry"]
    # exactly the three site records — no golden record as an extra patient
    assert bundle["total"] == len(entries) == 3
    by_id = {e["resource"]["id"]: e for e in entries}
    assert set(by_id) == {"pa-1", "pt-1", "pc-1"}
    for e in entries:
        assert e["resource"]["resourceType"] == "Patient"
        assert {"system": EMPI_PERSON_SYSTEM, "value": seeded["wei"]} in \
            e["resource"]["identifier"]
        assert e["search"]["mode"] == "match" and 0 < e["search"]["score"] <= 1
    # the archive's copy of the site Patient is served as the site sent it
    city = by_id["pc-1"]["resource"]
    assert city["meta"]["source"] == site_urn("city-1") and city["gender"] == "male"
    assert {"system": local_patient_id_system("city-1"), "value": "C0001"} in city["identifier"]
    # records the archive has not got are minimal Patients naming the site's numbers
    county = by_id["pa-1"]["resource"]
    assert county["meta"]["source"] == site_urn("county-a")
    assert {"system": local_patient_id_system("county-a"), "value": "A0001"} in \
        county["identifier"]
    scores = [e["search"]["score"] for e in entries]
    assert scores == sorted(scores, reverse=True)


async def test_pdqm_by_identifier_telecom_and_count(seeded, http) -> None:
    r = await http.get("/fhir/Patient", params={"identifier": f"{RESIDENT_ID_SYSTEM}|{NA_ID}"})
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {"pa-2", "pb-1"}
    r = await http.get("/fhir/Patient", params={"telecom": "phone|13900139000", "name": "李娜",
                                                "_count": "1"})
    assert len(r.json()["entry"]) == 1
    r = await http.get("/fhir/Patient",
                       params={"identifier": f"{local_patient_id_system('county-b')}|B0001"})
    (entry,) = r.json()["entry"]
    assert entry["resource"]["id"] == "pb-1" and entry["search"]["score"] == 1.0
    r = await http.get("/fhir/Patient",
                       params={"identifier": f"{EMPI_PERSON_SYSTEM}|{seeded['na']}"})
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {"pa-2", "pb-1"}
    r = await http.get("/fhir/Patient", params={"name": "王五", "birthdate": "1950-01-01"})
    assert r.status_code == 200 and r.json()["total"] == 0


async def test_pdqm_refuses_what_it_cannot_answer(seeded, http) -> None:
    r = await http.get("/fhir/Patient", params={"name": "张伟", "_sort": "name"})
    message = _issue(r, 400, "invalid")
    assert "'_sort' is not supported" in message and "family" in message \
        and "birthdate" in message
    r = await http.get("/fhir/Patient", params={"family:exact": "张"})
    assert "'family:exact'" in _issue(r, 400, "invalid")
    r = await http.get("/fhir/Patient", params={"gender": "male"})
    assert "needs an identifier, a phone, or a name" in _issue(r, 400, "invalid")
    r = await http.get("/fhir/Patient", params={"name": "张伟", "birthdate": "ge1980-01-01"})
    assert "exact date" in _issue(r, 400, "invalid")
    r = await http.get("/fhir/Patient", params={"name": "张伟", "birthdate": "1980-05-12",
                                                "_count": "0"})
    assert "_count" in _issue(r, 400, "invalid")
    r = await http.get("/fhir/Patient", params={"identifier": "nobar"})
    assert "<system>|<value>" in _issue(r, 400, "invalid")


# ---------------------------------------------------------------------- Person


async def test_person_links_each_site_record_with_golden_data(gateway, seeded, http) -> None:
    r = await http.get(f"/fhir/Person/{seeded['wei']}")
    assert r.status_code == 200, r.text
    person = r.json()
    assert person["resourceType"] == "Person" and person["id"] == seeded["wei"]
    assert {(link["target"]["reference"], link["target"]["identifier"]["system"])
            for link in person["link"]} == {("Patient/pa-1", site_urn("county-a")),
                                            ("Patient/pt-1", site_urn("township-a1")),
                                            ("Patient/pc-1", site_urn("city-1"))}
    assert person["gender"] == "male" and person["birthDate"] == "1980-05-12"
    assert person["name"][0]["text"] == "张伟"
    assert person["telecom"] == [{"system": "phone", "value": "138****8000"}]   # masked
    assert WEI_ID not in r.text
    masked = [i["value"] for i in person["identifier"] if i.get("type")]
    assert masked == ["110***********0014"]
    assert {"system": EMPI_PERSON_SYSTEM, "value": seeded["wei"]} in person["identifier"]

    _issue(await http.get("/fhir/Person/Pnobody"), 404, "not-found")
    # a person merged away is gone, and the answer names the survivor
    await asyncio.to_thread(gateway.identity.merge, seeded["wei"], seeded["na"], actor="test")
    message = _issue(await http.get(f"/fhir/Person/{seeded['na']}"), 410, "deleted")
    assert seeded["wei"] in message


async def test_every_http_lookup_is_logged_without_patient_data(gateway, seeded, http) -> None:
    await http.get("/fhir/Patient/$ihe-pix",
                   params={"sourceIdentifier": f"{RESIDENT_ID_SYSTEM}|{WEI_ID}"})
    await http.get("/fhir/Patient/$ihe-pix",
                   params={"sourceIdentifier": f"{RESIDENT_ID_SYSTEM}|{NA_ID[:-1]}X"})
    await http.get("/fhir/Patient", params={"name": "张伟", "birthdate": "1980-05-12"})
    await http.get(f"/fhir/Person/{seeded['wei']}")
    log = await asyncio.to_thread(gateway.store.list_exchanges, limit=10)
    ops = [(e.operation, e.outcome) for e in log]
    assert ops[:4] == [("FHIR/Person/read", "ok"), ("FHIR/Patient?search", "ok"),
                       ("FHIR/Patient/$ihe-pix", "error"), ("FHIR/Patient/$ihe-pix", "ok")]
    assert log[1].records == 3 and log[3].records == 3
    # each row names the signed-in doctor, their site and purpose
    assert {(e.requester_kind, e.requester_id, e.requester_site, e.purpose)
            for e in log[:4]} == {("user", "wang.li", "county-a", "TREAT")}
    text = json.dumps([[e.patient_ref, e.detail] for e in log[:4]], ensure_ascii=False)
    for secret in (WEI_ID, NA_ID[:-1], "张伟", "13800138000", "A0001", seeded["wei"]):
        assert secret not in text


# ---------------------------------------------------------------------- gRPC


def _stub(gateway, pki, name: str):
    channel = secure_channel(f"127.0.0.1:{gateway.grpc_port}", pki.material(name), 4 << 20,
                             server_name=GATEWAY_SERVER_NAME)
    return channel, gateway_pb2_grpc.GatewayStub(channel)


async def test_a_node_resolves_and_finds_patients_over_mtls(gateway, seeded, pki) -> None:
    channel, stub = _stub(gateway, pki, "county-b")
    try:
        answer = await stub.ResolvePatient(gateway_pb2.PixQuery(
            system=local_patient_id_system("county-a"), value="A0001"), timeout=10)
        assert answer.person_id == seeded["wei"]
        assert {(r.site_id, r.record_id, r.local_id) for r in answer.records} == {
            ("city-1", "pc-1", "C0001"), ("township-a1", "pt-1", "T0001")}
        only = await stub.ResolvePatient(gateway_pb2.PixQuery(
            system=RESIDENT_ID_SYSTEM, value=WEI_ID, target_sites=["township-a1"]), timeout=10)
        assert [(r.site_id, r.local_id) for r in only.records] == [("township-a1", "T0001")]

        found = await stub.FindPatients(gateway_pb2.PdqQuery(
            name="张伟", birth_date="1980-05-12"), timeout=10)
        assert {(m.site_id, m.record_id, m.person_id) for m in found.matches} == {
            ("county-a", "pa-1", seeded["wei"]), ("township-a1", "pt-1", seeded["wei"]),
            ("city-1", "pc-1", seeded["wei"])}
        assert all(0 < m.probability <= 1 for m in found.matches)
        limited = await stub.FindPatients(
            gateway_pb2.PdqQuery(phone="13900139000", name="李娜", limit=1), timeout=10)
        assert len(limited.matches) == 1 and limited.matches[0].person_id == seeded["na"]

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ResolvePatient(gateway_pb2.PixQuery(
                system=local_patient_id_system("county-a"), value="NOPE"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ResolvePatient(gateway_pb2.PixQuery(system="urn:oid:9", value="1"),
                                      timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.FindPatients(gateway_pb2.PdqQuery(sex="male"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "needs an identifier" in err.value.details()
    finally:
        await channel.close()
    log = [e for e in await asyncio.to_thread(gateway.store.list_exchanges, limit=20)
           if e.operation.startswith("Gateway/")]
    assert {(e.operation, e.requester_kind, e.requester_site) for e in log} == {
        ("Gateway/ResolvePatient", "node", "county-b"),
        ("Gateway/FindPatients", "node", "county-b")}
    assert all(WEI_ID not in (e.patient_ref or "") + e.detail for e in log)


async def test_an_operator_may_call_and_a_gateway_certificate_may_not(
        gateway, seeded, pki) -> None:
    channel, stub = _stub(gateway, pki, "tester")
    try:
        answer = await stub.ResolvePatient(gateway_pb2.PixQuery(
            system=site_urn("county-b"), value="pb-1"), timeout=10)
        assert answer.person_id == seeded["na"]
        assert [r.record_id for r in answer.records] == ["pa-2"]
    finally:
        await channel.close()
    channel, stub = _stub(gateway, pki, "gateway")
    try:
        for call, request in ((stub.ResolvePatient, gateway_pb2.PixQuery(
                system=site_urn("county-b"), value="pb-1")),
                (stub.FindPatients, gateway_pb2.PdqQuery(phone="13900139000"))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()
    # a certificate from another consortium never gets as far as the method
    channel, stub = _stub(gateway, pki, "foreign")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.FindPatients(gateway_pb2.PdqQuery(phone="13900139000"), timeout=5)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await channel.close()
