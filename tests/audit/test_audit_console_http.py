"""The audit console's API on a running gateway: search, anomalies, verify, dashboard."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
from audit_factories import exchange
from sqlalchemy import text

from federation.audit.reports import CST
from federation.referral.state import ReferralState
from federation.security.principal import Principal
from federation.workflow.records import NewTask
from federation.workflow.store import WorkflowStore
from tests.conftest import admin_token, bearer, staff_token

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
async def http(gateway):
    token = await asyncio.to_thread(admin_token, gateway, user="auditor.sun",
                                    roles=("auditor",), purpose="HCOMPL")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}",
                                 timeout=30, headers=bearer(token)) as client:
        yield client


def _own_rows(gateway, operation: str) -> list:
    return [e for e in gateway.store.list_exchanges(limit=1000) if e.operation == operation]


async def test_search_by_site_purpose_and_time_returns_exactly_those(gateway, http) -> None:
    early = NOW - 3 * DAY
    ids = await asyncio.to_thread(gateway.store.log_exchanges, [
        exchange(0, at=early, requester_site="county-a", target_site="city-1", purpose="TREAT"),
        exchange(1, at=early, requester_site="county-b", target_site="city-1", purpose="COC"),
        exchange(2, at=NOW - DAY, requester_site="county-a", target_site="county-b",
                 purpose="TREAT"),
        exchange(3, at=NOW - 10 * DAY, requester_site="county-a", target_site="city-1",
                 purpose="TREAT")])
    answer = await http.get("/api/audit/events", params={"site": "county-a",
                                                         "purpose": "TREAT"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # the default window is the last 7 days: exchange 3 is older
    assert [e["id"] for e in body["events"]] == [ids[2], ids[0]] and body["total"] == 2
    first = body["events"][1]
    assert first["requester"] == {"kind": "node", "id": "county-a", "site": "county-a"}
    assert (first["target_site"], first["operation"], first["outcome"], first["status"],
            first["patient_ref"]) == ("city-1", "Gateway/ResolvePatient", "ok", "OK",
                                      f"{0:032x}")
    assert isinstance(first["leaf"], int)
    leaf = await http.get(f"/fhir/AuditEvent/{first['leaf']}")
    assert {"type": "exchange-id", "valueString": str(ids[0])} in \
        leaf.json()["entity"][-1]["detail"]
    old = (await http.get("/api/audit/events", params={
        "site": "city-1", "since": (NOW - 11 * DAY).isoformat(),
        "until": (NOW - 2 * DAY).isoformat()})).json()
    assert [e["id"] for e in old["events"]] == [ids[1], ids[0], ids[3]]
    paged = (await http.get("/api/audit/events", params={
        "site": "city-1", "since": (NOW - 11 * DAY).isoformat(), "_count": 2,
        "_offset": 2})).json()
    assert (paged["total"], [e["id"] for e in paged["events"]]) == (3, [ids[3]])
    # every search is an exchange itself: the auditor, ids only
    rows = await asyncio.to_thread(_own_rows, gateway, "Audit/SearchEvents")
    assert len(rows) == 3 and {r.requester_id for r in rows} == {"auditor.sun"}


@pytest.mark.parametrize("params, says", [
    ({"since": "2025-02-30"}, "since must be a date"),
    ({"until": "2025-03-01T08:00"}, "time zone"),
    ({"since": "2025-03-09", "until": "2025-03-01"}, "before"),
    ({"since": "2024-01-01", "until": "2025-06-01"}, "at most 366 days"),
    ({"outcome": "maybe"}, "outcome must be one of"),
    ({"purpose": "SHOPPING"}, "purpose must be one of"),
    ({"_count": "0"}, "_count must be"),
    ({"_offset": "-1"}, "_offset must be"),
    ({"name": "张伟"}, "parameter 'name' is not supported"),
])
async def test_bad_parameters_are_a_clear_400(http, params, says) -> None:
    answer = await http.get("/api/audit/events", params=params)
    assert answer.status_code == 400
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    assert says in body["issue"][0]["diagnostics"]


async def test_patient_search_maps_the_person_to_the_logs_hashes(gateway, http) -> None:
    from federation.archive.read import patient_ref
    from federation.synth.people import resident_id

    wei = {"name": "张伟", "sex": "male", "birth_date": "1968-04-12",
           "national_id": resident_id("532323", dt.date(1968, 4, 12), "male", 17),
           "phone": "13812345678"}
    a = await asyncio.to_thread(gateway.identity.link, "county-a", "rec-a", wei)
    await asyncio.to_thread(gateway.identity.link, "city-1", "rec-b", wei)
    ids = await asyncio.to_thread(gateway.store.log_exchanges, [
        exchange(0, at=NOW, patient_ref=patient_ref("city-1", "rec-b")),
        exchange(1, at=NOW, patient_ref=patient_ref("county-b", "someone-else")),
        exchange(2, at=NOW, patient_ref=patient_ref("county-a", "rec-a"))])
    body = (await http.get("/api/audit/events", params={"patient": a.person_id})).json()
    assert [e["id"] for e in body["events"]] == [ids[2], ids[0]]
    by_hash = (await http.get("/api/audit/events",
                              params={"patient": patient_ref("county-b", "someone-else")})).json()
    assert [e["id"] for e in by_hash["events"]] == [ids[1]]
    unknown = await http.get("/api/audit/events", params={"patient": "P0000nobody"})
    assert unknown.status_code == 404
    # the search's own row names the person by hash, never the id in clear
    rows = await asyncio.to_thread(_own_rows, gateway, "Audit/SearchEvents")
    assert all(str(a.person_id) not in (r.patient_ref or "") + r.detail for r in rows)


async def test_anomalies_flag_bulk_unrelated_reads(gateway, http) -> None:
    # today's noon (UTC+8) unless that is still to come: the event search ends at now
    noon = min(dt.datetime.combine(NOW.astimezone(CST).date(), dt.time(12), CST),
               NOW - dt.timedelta(minutes=1))
    await asyncio.to_thread(gateway.store.log_exchanges, [
        exchange(i, at=noon, requester_kind="user", requester_id="curious.zhao",
                 requester_site="county-b", target_site="city-1",
                 operation="Gateway/ReadPatientRecord", patient_ref=f"{1000 + i:032x}")
        for i in range(25)])
    body = (await http.get("/api/audit/anomalies")).json()
    [flag] = [a for a in body["anomalies"] if a["rule"] == "unrelated-persons"]
    assert (flag["requester"], flag["persons"]) == ("user:curious.zhao", 25)
    assert body["rules"]["persons_per_day"] == 20
    follow = (await http.get("/api/audit/events", params={"who": "user:curious.zhao"})).json()
    assert follow["total"] == 25
    assert (await http.get("/api/audit/anomalies", params={"since": "x"})).status_code == 400


async def test_verify_now_keeps_the_result_and_names_the_first_bad_entry(gateway, http) -> None:
    assert (await http.get("/api/audit/verify")).status_code == 404
    ids = await asyncio.to_thread(gateway.store.log_exchanges,
                                  [exchange(i, at=NOW) for i in range(5)])
    ok = (await http.post("/api/audit/verify")).json()
    assert ok["ok"] is True and ok["first_bad_entry"] is None
    assert ok["entries"] == ok["tree_size"] >= 5 and len(ok["root"]) == 64
    assert ok["verified_by"] == "consortium/auditor.sun"
    last = (await http.get("/api/audit/verify")).json()
    assert last == ok
    with gateway.store.engine.begin() as conn:        # tamper with one audit row
        leaf = conn.execute(text("SELECT idx FROM audit_leaf WHERE exchange_id = :i"),
                            {"i": ids[2]}).scalar_one()
        conn.execute(text("UPDATE audit_leaf SET leaf = :b WHERE idx = :i"),
                     {"b": b'{"resourceType":"AuditEvent","id":"x"}', "i": leaf})
    bad = (await http.post("/api/audit/verify")).json()
    assert bad["ok"] is False
    assert (bad["first_bad_entry"]["leaf"], bad["first_bad_entry"]["kind"]) == (leaf, "edited")
    assert f"leaf {leaf}" in bad["message"]
    assert (await http.get("/api/audit/verify")).json()["first_bad_entry"]["leaf"] == leaf
    # the runs are exchanges too, saying how it went (no patient data)
    runs = await asyncio.to_thread(_own_rows, gateway, "Audit/Verify")
    assert [r.detail for r in runs][:1] == [f"tampered: {bad['findings']} finding(s), "
                                            f"first bad leaf {leaf}"]


async def test_dashboard_draws_volume_per_pair_per_day_and_turnaround(gateway, http) -> None:
    today = NOW.astimezone(CST).date()
    at = lambda days_ago: dt.datetime.combine(today - dt.timedelta(days=days_ago),  # noqa: E731
                                              dt.time(10), CST)
    await asyncio.to_thread(gateway.store.log_exchanges, [
        *[exchange(i, at=at(2), requester_site="county-a", target_site="city-1", records=4)
          for i in range(3)],
        exchange(9, at=at(0), requester_site="county-a", target_site="city-1"),
        exchange(10, at=at(1), requester_site="county-b", target_site="county-a"),
        exchange(11, at=at(20), requester_site="county-b", target_site="county-a")])
    workflows = WorkflowStore(gateway.store.engine)
    for n, urgency in enumerate(("urgent", "routine", "routine")):
        await asyncio.to_thread(_task, workflows, f"t{n}", urgency)
    body = (await http.get("/api/dashboard/exchanges", params={"days": 7})).json()
    assert len(body["days"]) == 7 and body["days"][-1] == today.isoformat()
    pairs = {(p["from"], p["to"]): p for p in body["pairs"]}
    ab = pairs[("county-a", "city-1")]
    assert ab["exchanges"] == [0, 0, 0, 0, 3, 0, 1] and ab["records"][4] == 12
    assert pairs[("county-b", "county-a")]["exchanges"] == [0, 0, 0, 0, 0, 1, 0]
    urgencies = {t["urgency"]: t for t in body["referral_turnaround"]}
    assert set(urgencies) == {"routine", "urgent"}
    assert (urgencies["routine"]["tasks"], urgencies["urgent"]["tasks"]) == (2, 1)
    assert body["consult_turnaround"] == []
    for bad in ("0", "93", "x"):
        assert (await http.get("/api/dashboard/exchanges",
                               params={"days": bad})).status_code == 400


def _task(workflows: WorkflowStore, task_id: str, urgency: str) -> None:
    workflows.create(NewTask(
        task_id=task_id, workflow="referral", category="upward",
        state=ReferralState.REQUESTED, requester_site="county-a", requester_user="wang.li",
        owner_site="city-1", owner_department="cardiology", patient_id="p1", person_id=None,
        urgency=urgency), {}, [], actor=Principal("person", "wang.li", "county-a",
                                                   frozenset({"doctor"})), now=NOW)


async def test_a_doctor_cannot_use_the_console(gateway, pki) -> None:
    token = await asyncio.to_thread(staff_token, gateway, pki)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}",
                                 timeout=10, headers=bearer(token)) as client:
        for method, path in (("GET", "/api/audit/events"), ("GET", "/api/audit/anomalies"),
                             ("POST", "/api/audit/verify"), ("GET", "/api/dashboard/exchanges")):
            assert (await client.request(method, path)).status_code == 403
