"""Archive test helpers: FHIR resources with valid defaults, seeding a gateway's archive
through its real store (``ArchiveStore.apply``, EMPI linking included), and bearer tokens
obtained from a running gateway the way a site's staff get them."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from typing import Any

import httpx

from federation.archive.store import StoredChange
from federation.fhir_systems import RESIDENT_ID_SYSTEM, local_patient_id_system, site_urn
from federation.security.tokens import JWT_BEARER_GRANT, sign_staff_assertion
from tests.conftest import Pki

LOINC = "http://loinc.org"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
_SEQ = itertools.count(1)

WEI = {"name": "王伟", "family": "王", "given": "伟", "nid": "110101198005120014",
       "phone": "13800138000", "birth": "1980-05-12", "gender": "male"}


def iso(when: dt.datetime) -> str:
    return when.isoformat()


def patient(site: str, pid: str, who: dict[str, str] = WEI, local: str = "L1") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "meta": {"source": site_urn(site)},
            "identifier": [{"system": local_patient_id_system(site), "value": local},
                           {"system": RESIDENT_ID_SYSTEM, "value": who["nid"]}],
            "name": [{"use": "official", "text": who["name"], "family": who["family"],
                      "given": [who["given"]]}],
            "telecom": [{"system": "phone", "value": who["phone"]}],
            "gender": who["gender"], "birthDate": who["birth"],
            "address": [{"text": "东阳县石门镇前村12号"}]}


def _base(rtype: str, site: str, rid: str, pid: str, key: str = "subject") -> dict[str, Any]:
    return {"resourceType": rtype, "id": rid, "meta": {"source": site_urn(site)},
            "identifier": [{"system": f"{site_urn(site)}:{rtype.lower()}-id", "value": rid}],
            key: {"reference": f"Patient/{pid}"}}


def encounter(site: str, rid: str, pid: str, start: dt.datetime, status: str = "finished"
              ) -> dict[str, Any]:
    return _base("Encounter", site, rid, pid) | {
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "period": {"start": iso(start)}}


def lab(site: str, rid: str, pid: str, loinc: str, value: float, unit: str,
        when: dt.datetime, **over: Any) -> dict[str, Any]:
    res = _base("Observation", site, rid, pid) | {
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": loinc},
                            {"system": f"{site_urn(site)}:lab-code", "code": f"X{loinc}"}],
                 "text": "检验"},
        "effectiveDateTime": iso(when),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                          "code": unit}}
    return res | over


def condition(site: str, rid: str, pid: str, icd: str, when: dt.datetime,
              clinical: str = "active") -> dict[str, Any]:
    return _base("Condition", site, rid, pid) | {
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                 "condition-clinical", "code": clinical}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": icd}],
                 "text": "左侧中央型肺鳞癌并纵膈淋巴结转移"},
        "recordedDate": iso(when)}


def medication(site: str, rid: str, pid: str, when: dt.datetime, status: str = "active"
               ) -> dict[str, Any]:
    return _base("MedicationRequest", site, rid, pid) | {
        "status": status, "intent": "order",
        "medicationCodeableConcept": {"text": "氨氯地平片"}, "authoredOn": iso(when),
        "dosageInstruction": [{"text": "5mg 口服 每日一次"}]}


def report(site: str, rid: str, pid: str, loinc: str, when: dt.datetime) -> dict[str, Any]:
    return _base("DiagnosticReport", site, rid, pid) | {
        "status": "final", "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "effectiveDateTime": iso(when), "issued": iso(when), "conclusion": "未见异常"}


def document(site: str, rid: str, pid: str, when: dt.datetime) -> dict[str, Any]:
    return _base("DocumentReference", site, rid, pid) | {
        "status": "current", "date": iso(when), "description": "出院小结 王伟",
        "content": [{"attachment": {"contentType": "text/plain", "data": "5Ye66Zmi5bCP57uT"}}]}


def allergy(site: str, rid: str, pid: str) -> dict[str, Any]:
    return _base("AllergyIntolerance", site, rid, pid, key="patient") | {
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                 "allergyintolerance-clinical",
                                       "code": "active"}]},
        "code": {"text": "青霉素"}, "criticality": "high"}


async def put(gateway, site: str, *resources: dict[str, Any], deleted: bool = False) -> None:
    """Store resources at ``site`` as the change-feed puller would (EMPI linking included)."""
    changes = []
    for res in resources:
        pid = None
        if res["resourceType"] != "Patient":
            ref = (res.get("subject") or res.get("patient"))["reference"]
            pid = ref.removeprefix("Patient/")
        changes.append(StoredChange(res["resourceType"], res["id"], next(_SEQ), deleted, pid,
                                    None if deleted else json.dumps(res).encode()))
    last = changes[-1].seq
    await asyncio.to_thread(gateway.archive.apply, site, "test-epoch", changes, after=last,
                            node_head=last, rejected=0, now=dt.datetime.now(dt.UTC),
                            caught_up=True)


async def token(http: httpx.AsyncClient, pki: Pki, site: str, *, roles=("doctor",),
                scopes=("user/*.read",), purpose: str = "TREAT", reason: str | None = None,
                user: str = "dr.li") -> str:
    t = pki.tls(site)
    assertion = sign_staff_assertion(t.key.read_bytes(), t.cert.read_bytes(), user_id=user,
                                     roles=roles, scopes=scopes, purpose=purpose, reason=reason)
    reply = await http.post("/auth/token", data={"grant_type": JWT_BEARER_GRANT,
                                                 "assertion": assertion})
    assert reply.status_code == 200, reply.text
    return reply.json()["access_token"]


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


def entries(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]
