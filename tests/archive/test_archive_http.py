"""The archive's person-level reads over HTTP on a real gateway: $everything across sites
(provenance, dedup, paging), strict FHIR search, the summary, consent, and every way a
read is refused — each read, allowed or not, in the exchange log."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from federation.archive.dedup import ALSO_REPORTED_BY
from federation.archive.service import person_ref
from federation.security.tokens import AccessTokens, TrustAnchor, verify_staff_assertion
from tests.archive.conftest import (
    LOINC,
    NOW,
    allergy,
    bearer,
    condition,
    document,
    encounter,
    entries,
    lab,
    medication,
    patient,
    put,
    report,
    token,
)

D = dt.timedelta
NA = {"name": "李娜", "family": "李", "given": "娜", "nid": "310104199203030029",
      "phone": "13900139000", "birth": "1992-03-03", "gender": "female"}


def _shared(site: str, rid: str, pid: str) -> dict:
    """A glucose result whose content is the same whichever site reports it."""
    return lab(site, rid, pid, "2345-7", 5.0, "mmol/L", NOW - D(days=10),
               code={"coding": [{"system": LOINC, "code": "2345-7"}]}, identifier=[])


@pytest.fixture
async def seeded(gateway):
    """Wang Wei at city-1, county-a (a visit 5 days ago: a care relationship) and
    township-a1 (no visit); Li Na only at county-b."""
    await put(gateway, "city-1", patient("city-1", "pc"),
              encounter("city-1", "e-c1", "pc", NOW - D(days=1000)),
              lab("city-1", "o-c1", "pc", "2823-3", 4.1, "mmol/L", NOW - D(days=400)),
              _shared("city-1", "o-c2", "pc"),
              lab("city-1", "o-c3", "pc", "718-7", 130, "g/L", NOW - D(days=2)),
              lab("city-1", "o-c4", "pc", "718-7", 128, "g/L", NOW - D(days=200),
                  identifier=[{"system": "urn:oid:2.16.840.1.113883.3.1", "value": "ACC-77"}]),
              condition("city-1", "c-c1", "pc", "C34.9", NOW - D(days=300)),
              medication("city-1", "m-c1", "pc", NOW - D(days=30)),
              report("city-1", "r-c1", "pc", "24323-8", NOW - D(days=2)),
              document("city-1", "d-c1", "pc", NOW - D(days=100)),
              allergy("city-1", "a-c1", "pc"))
    await put(gateway, "county-a", patient("county-a", "pa", local="A1"),
              encounter("county-a", "e-a1", "pa", NOW - D(days=5)),
              _shared("county-a", "o-a1", "pa"),
              lab("county-a", "o-a2", "pa", "718-7", 99, "g/L", NOW - D(days=199),
                  identifier=[{"system": "urn:oid:2.16.840.1.113883.3.1", "value": "ACC-77"}]),
              lab("county-a", "o-a3", "pa", "2823-3", 3.9, "mmol/L", NOW - D(days=5)),
              condition("county-a", "c-a1", "pa", "I10", NOW - D(days=5)))
    await put(gateway, "township-a1", patient("township-a1", "pt", local="T1"),
              lab("township-a1", "o-t1", "pt", "2823-3", 4.4, "mmol/L", NOW - D(days=50)))
    await put(gateway, "county-b", patient("county-b", "pb", NA, local="B1"),
              encounter("county-b", "e-b1", "pb", NOW - D(days=3)))
    people = gateway.archive_service.people
    wei = await asyncio.to_thread(people.resolve, "pa")
    assert wei.sites == {"city-1", "county-a", "township-a1"}, "EMPI linked Wang Wei's records"
    return wei.person_id


@pytest.fixture
async def http(gateway):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as client:
        yield client


def _archive_rows(gateway, op_prefix: str = "Archive/"):
    return [e for e in gateway.store.list_exchanges(limit=500)
            if e.operation.startswith(op_prefix)]


async def test_everything_brings_every_site_once_with_provenance(gateway, seeded, http, pki):
    auth = bearer(await token(http, pki, "county-a"))
    reply = await http.get(f"/fhir/Patient/{seeded}/$everything", headers=auth,
                           params={"_count": "1000"})
    assert reply.status_code == 200, reply.text
    bundle = reply.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    found = entries(bundle)
    sources = {r["meta"]["source"] for r in found}
    assert sources == {"urn:federation:site:city-1", "urn:federation:site:county-a",
                       "urn:federation:site:township-a1"}
    assert all("lastUpdated" in r["meta"] for r in found)
    ids = [r["id"] for r in found]
    # the glucose both sites reported (same content) and the result both carry by accession
    # number are shown once, naming the other site
    assert "o-c2" in ids and "o-a1" not in ids
    assert "o-c4" in ids and "o-a2" not in ids
    kept = next(r for r in found if r["id"] == "o-c2")
    assert {"system": ALSO_REPORTED_BY, "code": "county-a",
            "display": "also reported by"} in kept["meta"]["tag"]
    assert bundle["total"] == len(found) == 11 + (6 - 2) + 2
    assert not entries(bundle, "outcome")
    # a site's Patient id names the same person
    again = await http.get("/fhir/Patient/pt/$everything", headers=auth,
                           params={"_count": "1000"})
    assert sorted(r["id"] for r in entries(again.json())) == sorted(ids)


async def test_everything_pages_with_next_links(gateway, seeded, http, pki):
    auth = bearer(await token(http, pki, "county-a"))
    first = (await http.get(f"/fhir/Patient/{seeded}/$everything", headers=auth,
                            params={"_count": "1000"})).json()
    url, seen, pages = f"/fhir/Patient/{seeded}/$everything?_count=4", [], 0
    while url:
        page = (await http.get(url, headers=auth)).json()
        assert page["total"] == first["total"]
        got = entries(page)
        assert len(got) <= 4
        seen += [r["id"] for r in got]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = urlsplit(nxt[0]).path + "?" + urlsplit(nxt[0]).query if nxt else None
        pages += 1
    assert pages == -(-first["total"] // 4)
    assert seen == [r["id"] for r in entries(first)]
    bad = await http.get(f"/fhir/Patient/{seeded}/$everything", headers=auth,
                         params={"_since": "2024", "_count": "x"})
    assert bad.status_code == 400 and "_since" in bad.json()["issue"][0]["diagnostics"]


async def _search(http, auth, rtype, **params):
    reply = await http.get(f"/fhir/{rtype}", headers=auth, params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_every_search_parameter(gateway, seeded, http, pki):
    auth = bearer(await token(http, pki, "county-a"))
    p = {"patient": f"Patient/{seeded}"}

    async def ids(rtype, **params):
        return sorted(r["id"] for r in entries(await _search(http, auth, rtype, **(p | params))))

    assert await ids("Observation") == ["o-a3", "o-c1", "o-c2", "o-c3", "o-c4", "o-t1"]
    assert await ids("Observation", code=f"{LOINC}|2823-3") == ["o-a3", "o-c1", "o-t1"]
    assert await ids("Observation", code="718-7") == ["o-c3", "o-c4"]
    assert await ids("Observation", code=f"{LOINC}|2823-3,{LOINC}|2345-7") == [
        "o-a3", "o-c1", "o-c2", "o-t1"]
    assert await ids("Observation", code="|2823-3") == []          # has a system
    assert await ids("Observation", code="urn:federation:site:city-1:lab-code|") == [
        "o-c1", "o-c3", "o-c4"]
    assert await ids("Observation", category="laboratory") == await ids("Observation")
    day = (NOW - D(days=10)).astimezone(dt.timezone(D(hours=8))).date().isoformat()
    assert await ids("Observation", date=day) == ["o-c2"]
    assert await ids("Observation", date=f"eq{day}") == ["o-c2"]
    assert "o-c2" not in await ids("Observation", date=f"ne{day}")
    recent = (NOW - D(days=60)).isoformat()
    assert await ids("Observation", date=f"ge{recent}") == ["o-a3", "o-c2", "o-c3", "o-t1"]
    assert await ids("Observation", date=f"gt{recent}") == ["o-a3", "o-c2", "o-c3", "o-t1"]
    assert await ids("Observation", date=f"lt{recent}") == ["o-c1", "o-c4"]
    assert await ids("Observation", date=f"le{recent}") == ["o-c1", "o-c4"]
    assert await ids("Observation", date=f"sa{recent}") == ["o-a3", "o-c2", "o-c3", "o-t1"]
    assert await ids("Observation", date=f"eb{recent}") == ["o-c1", "o-c4"]
    window = [("date", f"ge{(NOW - D(days=60)).isoformat()}"),
              ("date", f"lt{(NOW - D(days=3)).isoformat()}")]
    reply = await http.get("/fhir/Observation", headers=auth,
                           params=[("patient", seeded), *window])
    assert sorted(r["id"] for r in entries(reply.json())) == ["o-a3", "o-c2", "o-t1"]
    newest = entries(await _search(http, auth, "Observation", **p, _sort="-date"))
    dates = [r["effectiveDateTime"] for r in newest]
    assert dates == sorted(dates, reverse=True)
    oldest = entries(await _search(http, auth, "Observation", **p, _sort="date"))
    assert [r["id"] for r in oldest] == [r["id"] for r in reversed(newest)]
    paged = await _search(http, auth, "Observation", **p, _sort="-date", _count="2")
    assert [r["id"] for r in entries(paged)] == [r["id"] for r in newest[:2]]
    nxt = next(link["url"] for link in paged["link"] if link["relation"] == "next")
    assert dict(parse_qsl(urlsplit(nxt).query))["_offset"] == "2"
    page2 = (await http.get(urlsplit(nxt).path + "?" + urlsplit(nxt).query,
                            headers=auth)).json()
    assert [r["id"] for r in entries(page2)] == [r["id"] for r in newest[2:4]]
    assert await ids("Condition") == ["c-a1", "c-c1"]
    assert await ids("Condition", code="C34.9") == ["c-c1"]
    assert await ids("MedicationRequest") == ["m-c1"]
    assert await ids("MedicationRequest", date=f"lt{(NOW - D(days=40)).isoformat()}") == []
    assert await ids("Encounter") == ["e-a1", "e-c1"]
    assert await ids("Encounter", date=f"ge{(NOW - D(days=30)).isoformat()}") == ["e-a1"]
    assert await ids("DiagnosticReport", code="24323-8") == ["r-c1"]
    assert await ids("DocumentReference") == ["d-c1"]
    assert await ids("AllergyIntolerance") == ["a-c1"]
    assert await ids("Observation", code="' OR 1=1 --") == []     # just a value


@pytest.mark.parametrize(("query", "named"), [
    ({"patient": "pa", "value-quantity": "5"}, "value-quantity"),
    ({"patient": "pa", "code:text": "钾"}, "code:text"),
    ({"patient": "pa", "subject.name": "x", "_elements": "id"}, "_elements"),
    ({"patient": "pa", "date": "ap2024"}, "ap"),
    ({"patient": "pa", "date": "2024-13-01"}, "date"),
    ({"patient": "pa", "_sort": "value"}, "_sort"),
    ({"patient": "pa", "_count": "-1"}, "_count"),
    ({"code": "2823-3"}, "patient"),
    ({"patient": "Patient/x'; DROP TABLE site_resource;--"}, "patient"),
])
async def test_unsupported_or_bad_parameters_are_400(gateway, seeded, http, pki, query, named):
    auth = bearer(await token(http, pki, "county-a"))
    reply = await http.get("/fhir/Observation", headers=auth, params=query)
    assert reply.status_code == 400
    body = reply.json()
    assert body["resourceType"] == "OperationOutcome" and named in body["issue"][0]["diagnostics"]
    assert (await asyncio.to_thread(gateway.archive.counts))["city-1"]["Observation"] == 4


async def test_summary_json_and_document(gateway, seeded, http, pki):
    auth = bearer(await token(http, pki, "county-a"))
    doc = (await http.get(f"/fhir/Patient/{seeded}/$summary", headers=auth)).json()
    assert doc["type"] == "document"
    composition = doc["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    titles = {s["code"]["coding"][0]["code"]: s for s in composition["section"]}
    assert set(titles) == {"11450-4", "10160-0", "48765-2", "30954-2", "46240-8"}
    urls = {e["fullUrl"] for e in doc["entry"]}
    for section in composition["section"]:
        for ref in section.get("entry", []):
            assert ref["reference"] in urls
    summary = (await http.get(f"/api/archive/persons/{seeded}/summary", headers=auth)).json()
    assert {p["codes"][0] for p in summary["problems"]} == {
        "http://hl7.org/fhir/sid/icd-10|C34.9", "http://hl7.org/fhir/sid/icd-10|I10"}
    assert [m["medication"] for m in summary["medications"]] == ["氨氯地平片"]
    assert summary["allergies"][0]["criticality"] == "high"
    assert summary["results"][0]["date"] >= summary["results"][-1]["date"]
    assert summary["encounters"][0]["site"] == "county-a"
    assert summary["sites"] == ["city-1", "county-a", "township-a1"]


async def test_record_view_is_the_three_reads_in_one(gateway, seeded, http, pki):
    """The console's record page: summary, a timeline page and the lab series from one
    read — the same content as the three separate calls, one exchange-log row."""
    auth = bearer(await token(http, pki, "county-a"))
    kinds = "Encounter,Condition,Observation"
    before = len(_archive_rows(gateway))
    reply = await http.get(f"/api/archive/persons/{seeded}/record", headers=auth,
                           params={"_type": kinds, "_count": "3", "_offset": "2",
                                   "labs": "4"})
    assert reply.status_code == 200, reply.text
    views = reply.json()
    rows = _archive_rows(gateway)
    assert len(rows) == before + 1
    assert (rows[0].operation, rows[0].outcome, rows[0].patient_ref) == (
        "Archive/record", "ok", person_ref(seeded))
    assert rows[0].records == 11 + (6 - 2) + 2      # the whole record, deduplicated
    summary = (await http.get(f"/api/archive/persons/{seeded}/summary", headers=auth)).json()
    assert views["summary"].pop("generated_at") <= summary.pop("generated_at")
    assert views["summary"] == summary
    everything = (await http.get(f"/fhir/Patient/{seeded}/$everything", headers=auth,
                                 params={"_type": kinds, "_count": "3", "_offset": "2"})).json()
    timeline = views["timeline"]
    assert [r["id"] for r in entries(timeline)] == [r["id"] for r in entries(everything)]
    assert timeline["total"] == everything["total"] and len(entries(timeline)) == 3
    assert {k: v for k, v in _links(timeline).items() if k != "self"} == {
        k: v for k, v in _links(everything).items() if k != "self"}
    labs = (await http.get("/fhir/Observation", headers=auth, params={
        "patient": seeded, "category": "laboratory", "_sort": "date", "_count": "4"})).json()
    assert [r["id"] for r in entries(views["labs"])] == [r["id"] for r in entries(labs)]
    assert views["labs"]["total"] == labs["total"] > 4
    # a token whose scopes leave Observation out gets no lab series (and no labs anywhere)
    narrow = (await http.get(f"/api/archive/persons/{seeded}/record", headers=bearer(
        await token(http, pki, "county-a", scopes=("user/Patient.read",
                                                    "user/Condition.read"))))).json()
    assert narrow["labs"]["total"] == 0 and not entries(narrow["labs"])
    assert {r["resourceType"] for r in entries(narrow["timeline"])} <= {"Patient", "Condition"}
    # refused like any read, logged once; bad parameters are named
    refused = await http.get(f"/api/archive/persons/{seeded}/record",
                             headers=bearer(await token(http, pki, "county-b")))
    assert refused.status_code == 403
    assert "no care relationship" in refused.json()["issue"][0]["diagnostics"]
    assert _archive_rows(gateway)[0].outcome == "refused"
    for params, named in [({"_sort": "date"}, "_sort"), ({"_type": "Task"}, "_type"),
                          ({"labs": "many"}, "labs")]:
        bad = await http.get(f"/api/archive/persons/{seeded}/record", headers=auth,
                             params=params)
        assert bad.status_code == 400 and named in bad.json()["issue"][0]["diagnostics"]


def _links(bundle: dict) -> dict[str, dict]:
    """A Bundle's links by relation, each URL's query as a dict (order aside)."""
    return {link["relation"]: dict(parse_qsl(urlsplit(link["url"]).query))
            | {"path": urlsplit(link["url"]).path} for link in bundle["link"]}


async def test_refusals_and_break_glass_all_logged(gateway, seeded, http, pki):
    url = f"/fhir/Patient/{seeded}/$everything"
    # county-b: no record, no referral, no visit
    refused = await http.get(url, headers=bearer(await token(http, pki, "county-b")))
    assert refused.status_code == 403
    assert "no care relationship" in refused.json()["issue"][0]["diagnostics"]
    # township-a1 holds a record but had no visit: refused too; break-glass is allowed
    assert (await http.get(url, headers=bearer(await token(http, pki, "township-a1")))
            ).status_code == 403
    glass = await http.get(url, headers=bearer(await token(
        http, pki, "township-a1", purpose="ETREAT", reason="昏迷患者急诊抢救")))
    assert glass.status_code == 200 and entries(glass.json())
    # wrong purpose, wrong role, scopes that do not cover Patient
    for kwargs, status, words in [
            ({"purpose": "HOPERAT"}, 403, "not for purpose HOPERAT"),
            ({"roles": ("site-admin",)}, 403, "roles"),
            ({"scopes": ("user/Observation.read",)}, 403, "user/Patient.read")]:
        reply = await http.get(url, headers=bearer(await token(http, pki, "county-a", **kwargs)))
        assert reply.status_code == status and words in reply.json()["issue"][0]["diagnostics"]
    # a token that covers Observation and Patient only sees those
    narrow = await http.get(url, params={"_count": "1000"}, headers=bearer(await token(
        http, pki, "county-a", scopes=("user/Patient.read", "user/Observation.read"))))
    assert {r["resourceType"] for r in entries(narrow.json())} == {"Patient", "Observation"}
    # no token, an expired one, one from a foreign CA
    assert (await http.get(url)).status_code == 401
    trust = TrustAnchor(pki.tls("gateway").ca.read_bytes())
    gw = pki.tls("gateway")
    tokens = AccessTokens(gw.key.read_bytes(), gw.cert.read_bytes(), trust)
    from federation.security.tokens import sign_staff_assertion
    t = pki.tls("county-a")
    claims = verify_staff_assertion(sign_staff_assertion(
        t.key.read_bytes(), t.cert.read_bytes(), user_id="dr.li", roles=["doctor"],
        scopes=["user/*.read"], purpose="TREAT"), trust)
    expired, _ = tokens.issue(claims, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    reply = await http.get(url, headers=bearer(expired))
    assert reply.status_code == 401 and "expired" in reply.json()["issue"][0]["diagnostics"]
    fake = await http.get(url, headers=bearer(_foreign_token(pki, claims)))
    assert fake.status_code == 401
    # the wrong purpose, role and scope are refused by the authorisation matrix before
    # the archive runs: logged under the route, without a patient (ids only)
    matrix = [r for r in _archive_rows(gateway, "GET /fhir/Patient/{some_id}/$everything")]
    assert {(r.requester_site, r.outcome, r.status_code) for r in reversed(matrix)} >= {
        ("county-a", "refused", "forbidden")}
    assert len([r for r in matrix if r.status_code == "forbidden"]) == 3
    assert all(r.patient_ref is None for r in matrix)
    rows = [r for r in _archive_rows(gateway) if r.patient_ref is not None]
    assert all(r.patient_ref == person_ref(seeded) for r in rows)
    assert all(seeded not in (r.detail + r.requester_id) for r in rows)
    outcomes = [(r.requester_site, r.purpose, r.outcome) for r in reversed(rows)]
    assert outcomes[:3] == [("county-b", "TREAT", "refused"),
                            ("township-a1", "TREAT", "refused"),
                            ("township-a1", "ETREAT", "ok")]
    glass_row = next(r for r in rows if r.purpose == "ETREAT")
    assert "break-glass" in glass_row.detail and "昏迷患者急诊抢救" in glass_row.detail


def _foreign_token(pki, claims) -> str:
    """An access token signed by a gateway of another consortium."""
    import tempfile
    from pathlib import Path

    from federation.security.ca import init_ca

    root = Path(tempfile.mkdtemp())
    other = init_ca(root / "ca", consortium="Other")
    other.issue_gateway(root / "gateway")
    key = (root / "gateway" / "gateway.key").read_bytes()
    cert = (root / "gateway" / "gateway.crt").read_bytes()
    trust = TrustAnchor((root / "ca" / "ca.crt").read_bytes())
    return AccessTokens(key, cert, trust).issue(claims)[0]


def _consent(patient_ref: dict, *provisions: dict, top: str = "permit") -> dict:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": patient_ref,
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                 "v3-ActCode", "code": "OPTIN"}]},
            "provision": {"type": top, **({"provision": list(provisions)} if provisions else {})}}


async def test_consent_excludes_sites_and_categories(gateway, seeded, http, pki):
    writer = bearer(await token(http, pki, "county-a", roles=("doctor",),
                                scopes=("user/*.read", "user/Consent.write")))
    url = f"/fhir/Patient/{seeded}/$everything?_count=1000"
    before = entries((await http.get(url, headers=writer)).json())
    # refused: bad FHIR, unknown site, no rights, a site that holds no record of the person
    bad = [_consent({"reference": "Patient/pa"}) | {"status": "nonsense"},
           _consent({"reference": "Patient/pa"}, {"type": "deny", "actor": [{
               "role": {"text": "custodian"}, "reference": {"reference": "Organization/nowhere"}}]}),
           {"resourceType": "Patient"}]
    for body in bad:
        reply = await http.post("/fhir/Consent", headers=writer, content=json.dumps(body))
        assert reply.status_code == 400, reply.text
    no_scope = bearer(await token(http, pki, "county-a"))
    deny_city = _consent({"reference": "Patient/pa"}, {"type": "deny", "actor": [{
        "role": {"text": "custodian"}, "reference": {"reference": "Organization/city-1"}}]})
    assert (await http.post("/fhir/Consent", headers=no_scope,
                            content=json.dumps(deny_city))).status_code == 403
    outsider = bearer(await token(http, pki, "county-b", scopes=("user/Consent.write",)))
    assert (await http.post("/fhir/Consent", headers=outsider,
                            content=json.dumps(deny_city))).status_code == 403
    after_bad = entries((await http.get(url, headers=writer)).json())
    assert [r["id"] for r in after_bad] == [r["id"] for r in before]

    made = await http.post("/fhir/Consent", headers=writer, content=json.dumps(deny_city))
    assert made.status_code == 201, made.text
    stored = await http.get(urlsplit(made.headers["location"]).path, headers=bearer(
        await token(http, pki, "county-a", scopes=("user/Consent.read",))))
    assert stored.json()["id"] == made.json()["id"]
    bundle = (await http.get(url, headers=writer)).json()
    assert "urn:federation:site:city-1" not in {r["meta"]["source"] for r in entries(bundle)}
    note = entries(bundle, "outcome")[0]["issue"][0]
    assert note["code"] == "suppressed" and "city-1" not in note["diagnostics"]
    # the shared glucose is still there: county-a reported it too
    assert {"o-a1"} <= {r["id"] for r in entries(bundle)}
    no_obs = _consent({"identifier": {"system": "urn:federation:empi:person", "value": seeded}},
                      {"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types",
                                                  "code": "Observation"}]})
    assert (await http.post("/fhir/Consent", headers=writer,
                            content=json.dumps(no_obs))).status_code == 201
    left = entries((await http.get(url, headers=writer)).json())
    # county-a's own observations stay visible to county-a; township-a1's are withheld
    assert {r["id"] for r in left if r["resourceType"] == "Observation"} == {
        "o-a1", "o-a2", "o-a3"}
    glass = bearer(await token(http, pki, "township-a1", purpose="ETREAT", reason="抢救"))
    seen = entries((await http.get(url, headers=glass)).json())
    assert not any(r["meta"]["source"].endswith("city-1") for r in seen)  # even break-glass
    logged = [r for r in _archive_rows(gateway) if r.operation == "Archive/Consent.create"]
    # the token without user/Consent.write is refused by the authorisation matrix (logged
    # under the route); the outsider site by the archive's own check
    assert sorted(r.outcome for r in logged) == ["error"] * 3 + ["ok"] * 2 + ["refused"]
    matrix = _archive_rows(gateway, "POST /fhir/Consent")
    assert [(r.outcome, r.requester_site) for r in matrix] == [("refused", "county-a")]


async def test_a_changed_and_a_deleted_record_show_at_the_next_read(gateway, seeded, http, pki):
    auth = bearer(await token(http, pki, "county-a"))
    url = f"/fhir/Patient/{seeded}/$everything?_count=1000"
    before = {r["id"]: r for r in entries((await http.get(url, headers=auth)).json())}
    assert before["o-c3"]["valueQuantity"]["value"] == 130 and "o-t1" in before
    await put(gateway, "city-1", lab("city-1", "o-c3", "pc", "718-7", 131, "g/L",
                                     NOW - D(days=2), status="amended"))
    await put(gateway, "township-a1", {"resourceType": "Observation", "id": "o-t1",
                                       "subject": {"reference": "Patient/pt"}}, deleted=True)
    after = {r["id"]: r for r in entries((await http.get(url, headers=auth)).json())}
    assert after["o-c3"]["valueQuantity"]["value"] == 131
    assert after["o-c3"]["status"] == "amended" and "o-t1" not in after
    assert len(after) == len(before) - 1
