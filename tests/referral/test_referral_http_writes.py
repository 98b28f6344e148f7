"""Two-way referral driven over the gateway's HTTP API only, as the web console drives it:
bearer tokens, the authorisation matrix, JSON in, FHIR Task / OperationOutcome out, on a
running consortium (real nodes over mutual TLS). Each refusal is checked for its status,
its message and the field it names — and for leaving the referral as it was."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.task import Task

from tests.conftest import admin_token, bearer, staff_token

pytestmark = pytest.mark.asyncio(loop_scope="module")
IN_AN_HOUR = (dt.datetime.now(dt.UTC).replace(microsecond=0)
              + dt.timedelta(hours=1)).isoformat()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tokens(up) -> dict[str, dict[str, str]]:
    """Staff signed in the real way (their site's assertion → /auth/token), off the loop
    that serves the gateway."""
    async def staff(site: str, user: str, role: str) -> dict[str, str]:
        return bearer(await asyncio.to_thread(staff_token, up.gateway, up.pki, site=site,
                                              user=user, roles=(role,)))
    out = {"county": await staff("county-a", "dr-wang", "doctor"),
           "county-nurse": await staff("county-a", "nurse-wu", "nurse"),
           "city": await staff("city-1", "dr-li", "specialist"),
           "city-2": await staff("city-1", "dr-zhou", "doctor"),
           "township": await staff("township-a1", "dr-ma", "doctor"),
           "county-b": await staff("county-b", "dr-xu", "doctor")}
    out["admin"] = bearer(await asyncio.to_thread(admin_token, up.gateway, user="ra.qian"))
    return out


@pytest.fixture(scope="module")
def api(up):
    return f"http://127.0.0.1:{up.gateway.http_port}/api/referrals"


async def _call(method: str, url: str, headers: dict[str, str] | None,
                body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.request(method, url, headers=headers,
                                    json=body if body is not None else None)


def _upward(patient: str, **over: Any) -> dict[str, Any]:
    return {"patient_id": patient, "direction": "upward", "urgency": "urgent",
            "target_site": "city-1", "department": "cardiology",
            "reason": {"code": "I21.9", "display": "急性心肌梗死"},
            "notes": "chest pain 3 h", "consent": {"method": "written"}} | over


def _refused(answer: httpx.Response, status: int, says: str,
             field: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    issue = answer.json()["issue"][0]
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert says in issue["diagnostics"], issue["diagnostics"]
    if field is not None:
        assert issue.get("expression") == [field], issue
    return issue


async def _create(api: str, who: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    answer = await _call("POST", api, who, body)
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"/fhir/Task/{answer.json()['id']}"
    return answer.json()


async def _move(api: str, who: dict[str, str], task_id: str, action: str,
                body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = await _call("POST", f"{api}/{task_id}/{action}", who, body or {})
    assert answer.status_code == 200, answer.text
    Task.model_validate(answer.json())
    return answer.json()


async def _view(api: str, who: dict[str, str], task_id: str) -> dict[str, Any]:
    answer = await _call("GET", f"{api}/{task_id}", who)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _logged(up, task_id: str) -> list[tuple[str, str, str]]:
    """(operation, requester, outcome) of the exchange-log rows about ``task_id``."""
    return [(r.operation, r.requester_id, r.outcome)
            for r in reversed(up.gateway.store.list_exchanges(limit=500))
            if r.correlation_id == task_id]


async def _count(up, tokens, patient: str) -> int:
    answer = await _call("GET", f"http://127.0.0.1:{up.gateway.http_port}/fhir/Task?"
                         f"patient=Patient/{patient}&_count=1", tokens["county"])
    return int(answer.json()["total"])


# ---------------------------------------------------------------------------- options


async def test_options_offer_what_the_rules_allow(api, tokens):
    county = (await _call("GET", f"{api}/options", tokens["county"])).json()
    assert county["site"]["id"] == "county-a" and county["site"]["tier"] == "county"
    assert county["create"] is True
    up_urgent = county["targets"]["upward"]["urgent"]
    assert [s["id"] for s in up_urgent] == ["city-1"]
    assert up_urgent[0]["tier"] == "city" and "cardiology" in up_urgent[0]["departments"]
    assert "township-a1" in [s["id"] for s in county["targets"]["downward"]["routine"]]
    assert county["targets"]["downward"]["emergency"] == []   # the rules: none downward
    urgencies = {u["code"]: u for u in county["urgencies"]}
    assert urgencies["emergency"]["acknowledge_within_s"] == 30 * 60
    assert urgencies["emergency"]["priority"] == "stat"
    assert "no-capacity" in [r["code"] for r in county["reject_reasons"]]
    assert county["consent_methods"] == ["written", "verbal", "electronic"]
    assert "receive-result" in county["actions"] and "create" not in county["actions"]

    township = (await _call("GET", f"{api}/options", tokens["township"])).json()
    assert [s["id"] for s in township["targets"]["upward"]["routine"]] == ["county-a"]
    assert {"county-a", "city-1"} <= {s["id"] for s in township["targets"]["upward"]["emergency"]}
    nurse = (await _call("GET", f"{api}/options", tokens["county-nurse"])).json()
    assert nurse["create"] is False           # the state machine: doctors and specialists
    admin = (await _call("GET", f"{api}/options", tokens["admin"])).json()
    assert admin["site"] is None and admin["targets"] == {} and admin["create"] is False


# ---------------------------------------------------------------------------- the loop


async def test_upward_loop_over_http_only(up, api, tokens):
    patient = up.linked("county-a")[0]
    before = await _count(up, tokens, patient)
    body = _upward(patient, request_id="console-loop-1")
    task = await _create(api, tokens["county"], body)
    Task.model_validate(task)
    assert (task["status"], task["businessStatus"]["text"]) == ("requested", "awaiting-triage")
    assert task["requester"]["identifier"]["value"] == "county-a"
    ref = task["id"]
    again = await _call("POST", api, tokens["county"], body)        # a retried request
    assert again.status_code == 200 and again.json()["id"] == ref
    assert await _count(up, tokens, patient) == before + 1

    view = await _view(api, tokens["city"], ref)
    assert view["actions"] == ["accept", "reject", "redirect", "note"]
    assert (await _view(api, tokens["county"], ref))["actions"] == ["note", "cancel"]
    assert view["service_request"]["reasonCode"][0]["coding"][0]["code"] == "I21.9"
    assert view["consent"]["resourceType"] == "Consent"

    booked = await _move(api, tokens["city"], ref, "accept", {
        "appointment_start": IN_AN_HOUR, "admission_note": "cardiology ward, bed 12"})
    assert booked["businessStatus"]["text"] == "booked"           # accept + book at once
    await _move(api, tokens["city"], ref, "book", {"appointment_start": IN_AN_HOUR})
    await _move(api, tokens["county"], ref, "note", {"note": "patient on aspirin"})
    await _move(api, tokens["city"], ref, "start")
    done = await _move(api, tokens["city"], ref, "complete", {
        "result_text": "STEMI; PCI to LAD", "result_kind": "discharge-summary"})
    assert (done["status"], done["businessStatus"]["text"]) == ("completed", "result-sent")
    assert done["output"][0]["valueReference"]["reference"] == f"DocumentReference/{ref}-result"

    # the requester acknowledges the result; its node may have beaten it to it (a node's
    # receipt of the result closes the loop too) — then the move is a clear conflict
    ack = await _call("POST", f"{api}/{ref}/receive-result", tokens["county"], {})
    if ack.status_code != 200:
        _refused(ack, 409, "it is completed (closed)")
    view = await _view(api, tokens["county"], ref)
    assert (view["status"], view["business_status"]) == ("completed", "closed")
    assert view["actions"] == [] and view["closed"]
    moves = [(h["action"], h["from"] and h["from"]["business_status"],
              h["to"]["business_status"]) for h in view["history"]
             if h["action"] != "attach-packet"]
    assert moves == [("create", None, "awaiting-triage"), ("accept", "awaiting-triage", "accepted"),
                     ("book", "accepted", "booked"), ("book", "booked", "booked"),
                     ("note", "booked", "booked"), ("start", "booked", "in-visit"),
                     ("complete", "in-visit", "result-sent"),
                     ("receive-result", "result-sent", "closed")]
    # (the packet's arrival, by the system, may come before or after the triage)
    assert next(h["by"] for h in view["history"] if h["action"] == "accept") == "city-1/dr-li"
    assert view["history"][-1]["by"] in ("county-a/dr-wang", "system")
    assert view["appointment"]["status"] == "fulfilled"
    assert view["admission_note"] == "cardiology ward, bed 12"
    assert "patient on aspirin" in [n["text"] for n in view["notes"]]
    (result,) = view["results"]
    assert result["type"]["coding"][0]["code"] == "18842-5"

    # the packet: 409 until the origin node's record is assembled, then the Bundle (a
    # busy machine's first fetch may miss its deadline: the job retries with backoff)
    deadline = asyncio.get_running_loop().time() + 180
    while True:
        packet = await _call("GET", f"{api}/{ref}/packet", tokens["city"])
        if packet.status_code == 200:
            break
        _refused(packet, 409, "not assembled yet")
        assert asyncio.get_running_loop().time() < deadline, packet.text
        await asyncio.sleep(0.2)
    Bundle.model_validate(packet.json())
    assert packet.json()["entry"][0]["resource"]["resourceType"] == "Patient"
    assert (await _view(api, tokens["city"], ref))["packet"]["assembled"] is True

    # every call is one exchange-log row: each move by whom, and each read
    rows = _logged(up, ref)
    for operation, by in [("Referrals/accept", "city-1/dr-li"),
                          ("Referrals/book", "city-1/dr-li"),
                          ("Referrals/note", "county-a/dr-wang"),
                          ("Referrals/start", "city-1/dr-li"),
                          ("Referrals/complete", "city-1/dr-li"),
                          ("Referrals/receive-result", "county-a/dr-wang")]:
        assert (operation, by, "ok" if ack.status_code == 200 or "receive" not in operation
                else "error") in rows, operation
    ops = [r.operation for r in up.gateway.store.list_exchanges(limit=500)]
    assert "Referrals/Create" in ops and "Referrals/Get" in ops and "Referrals/Packet" in ops


async def test_concurrent_accepts_one_wins(up, api, tokens):
    ref = (await _create(api, tokens["county"], _upward(up.linked("county-a")[1])))["id"]
    answers = await asyncio.gather(*(
        _call("POST", f"{api}/{ref}/accept", tokens[who], {"admission_note": f"by {who}"})
        for who in ("city", "city-2")))
    assert sorted(a.status_code for a in answers) == [200, 409]
    lost = next(a for a in answers if a.status_code == 409)
    _refused(lost, 409, "cannot accept referral")
    view = await _view(api, tokens["city"], ref)
    assert [h["action"] for h in view["history"]].count("accept") == 1
    assert ("Referrals/accept", "error") in {(op, out) for op, _, out in _logged(up, ref)}


async def test_redirect_over_http(up, api, tokens):
    ref = (await _create(api, tokens["county"], _upward(up.linked("county-a")[2])))["id"]
    _refused(await _call("POST", f"{api}/{ref}/redirect", tokens["city"],
                         {"target_site": "county-a"}), 400, "third site", "target_site")
    moved = await _move(api, tokens["city"], ref, "redirect", {
        "target_site": "county-b", "department": "cardiology", "reason_code": "no-capacity",
        "reason_text": "no cath lab bed this week"})
    assert (moved["status"], moved["businessStatus"]["text"]) == ("cancelled", "redirected")
    old = await _view(api, tokens["county"], ref)
    new_id = old["related"]["redirected_to"]["id"]
    assert old["related"]["redirected_to"]["site"] == "county-b" and new_id != ref
    new = await _view(api, tokens["county-b"], new_id)
    assert new["related"]["replaces"] == ref and new["related"]["redirected_from"] == ref
    assert new["owner"] == {"site": "county-b", "department": "cardiology"}
    assert new["actions"] == ["accept", "reject", "redirect", "note"]
    # the site it left reads neither state nor packet of the new referral
    assert (await _call("GET", f"{api}/{new_id}", tokens["city"])).status_code == 404


async def test_downward_with_care_plan_and_follow_ups(up, api, tokens):
    at_county, at_city = up.shared("county-a", "city-1")
    ref = (await _create(api, tokens["county"], _upward(at_county)))["id"]
    await _move(api, tokens["city"], ref, "accept", {"admission_note": "ward 3"})
    await _move(api, tokens["city"], ref, "start")
    await _move(api, tokens["city"], ref, "complete", {"result_text": "recovering"})
    down_body = {"patient_id": at_city, "direction": "downward", "target_site": "county-a",
                 "department": "rehabilitation", "consent": {"method": "verbal"},
                 "based_on": ref, "discharge_summary": "PCI day 1; stable",
                 "follow_ups": [{"days_from_now": 7, "what": "wound and ECG check"},
                                {"days_from_now": 30, "what": "lipids, blood pressure"}]}
    _refused(await _call("POST", api, tokens["city"], down_body | {"follow_ups": []}),
             400, "follow-up plan", "follow_ups")
    down = await _create(api, tokens["city"], down_body)
    view = await _view(api, tokens["city"], down["id"])
    assert view["direction"] == "downward" and view["related"]["based_on"] == ref
    assert [a["detail"]["description"] for a in view["care_plan"]["activity"]] == [
        "wound and ECG check", "lipids, blood pressure"]
    assert view["discharge_summary"]["type"]["coding"][0]["code"] == "18842-5"
    upward_view = await _view(api, tokens["city"], ref)
    assert [d["id"] for d in upward_view["related"]["downward"]] == [down["id"]]

    county = tokens["county"]
    _refused(await _call("POST", f"{api}/{down['id']}/follow-up", county, {"note": "seen"}),
             409, "cannot follow-up")                 # not before accepting
    await _move(api, county, down["id"], "accept", {"appointment_start": IN_AN_HOUR})
    assert "follow-up" in (await _view(api, county, down["id"]))["actions"]
    await _move(api, county, down["id"], "follow-up", {
        "note": "day 7: wound clean", "visit_date": IN_AN_HOUR})
    view = await _view(api, county, down["id"])
    (visit,) = view["follow_up_visits"]
    assert visit["id"] == f"{down['id']}-fu1" and view["business_status"] == "follow-up"
    assert "complete" in view["actions"]


# ---------------------------------------------------------------------------- refusals


async def test_refusals_are_clear_and_change_nothing(up, api, tokens):
    patient = up.linked("county-a")[3]
    before = await _count(up, tokens, patient)
    good = _upward(patient)
    for body, says, field in [
        (good | {"urgency": "whenever"}, "urgency must be one of", "urgency"),
        ({k: v for k, v in good.items() if k != "consent"}, "consent", "consent"),
        (good | {"consent": {"method": "telepathy"}}, "consent must be one of", "consent"),
        (good | {"consent": {"method": "written", "by": "x"}}, "not a field", "consent.by"),
        (good | {"patinet_id": patient}, "not a field", "patinet_id"),
        (good | {"requester_site": "city-1"}, "you signed in as", "requester_site"),
        (good | {"department": "x" * 65}, "at most 64", "department"),
        (good | {"notes": 12}, "must be a string", "notes"),
        (good | {"reason": "chest pain"}, "must be a JSON object", "reason"),
        (good | {"direction": "downward", "follow_ups": [{"days_from_now": "7", "what": "x"}]},
         "whole number", "follow_ups[0].days_from_now"),
        (good | {"patient_id": ""}, "patient_id", "patient_id"),
    ]:
        _refused(await _call("POST", api, tokens["county"], body), 400, says, field)
    _refused(await _call("POST", api, tokens["county"], good | {"target_site": "nowhere"}),
             404, "not a member")
    _refused(await _call("POST", api, tokens["county"], good | {"target_site": "township-a1"}),
             403, "not allowed")                       # upward to a township: the rules
    _refused(await _call("POST", api, tokens["county-nurse"], good), 403,
             "POST /api/referrals is for")             # the matrix: doctors, specialists
    async with httpx.AsyncClient(timeout=10) as client:
        garbled = await client.post(api, content=b"{", headers=tokens["county"]
                                    | {"content-type": "application/json"})
    _refused(garbled, 400, "must be JSON")
    assert await _count(up, tokens, patient) == before  # nothing was created

    ref = (await _create(api, tokens["county"], good))["id"]
    for who, action, body, status, says, field in [
        ("city", "accept", {}, 400, "appointment time or an admission note",
         "appointment_start"),
        ("city", "accept", {"appointment_start": "2026-12-01T09:30"}, 400, "time zone",
         "appointment_start"),
        ("city", "reject", {"reason_code": "bored"}, 400, "coded reason", "reason_code"),
        ("city", "accept", {"admission_note": "x", "bed": 3}, 400, "not a field", "bed"),
        ("city", "approve", {}, 400, "accept, reject, redirect", "action"),
        ("city", "start", {}, 409, "cannot start referral", None),       # not accepted yet
        ("township", "accept", {"admission_note": "x"}, 403,
         "only staff of the site it is addressed to", None),              # wrong site
        ("county", "accept", {"admission_note": "x"}, 403,
         "only staff of the site it is addressed to", None),              # its own sender
        ("city", "cancel", {}, 403, "staff of the requesting site may", None),
    ]:
        answer = await _call("POST", f"{api}/{ref}/{action}", tokens[who], body)
        _refused(answer, status, says, field)
    stale = await _call("POST", f"{api}/{ref}/accept", tokens["city"],
                        {"admission_note": "x", "expected_version": 99})
    _refused(stale, 409, "changed meanwhile")
    view = await _view(api, tokens["county"], ref)
    assert (view["version"], view["business_status"]) in ((1, "awaiting-triage"),
                                                          (2, "awaiting-triage"))  # + packet
    assert [h["action"] for h in view["history"] if h["action"] != "attach-packet"] == [
        "create"]
    # a third site does not learn the referral exists; unknown ids are 404 alike
    _refused(await _call("GET", f"{api}/{ref}", tokens["township"]), 404, "does not exist")
    _refused(await _call("GET", f"{api}/ref-nope", tokens["county"]), 404, "does not exist")
    # every refusal is an exchange-log row: the service's, or the route's before it
    rows = _logged(up, ref)
    assert sum(1 for op, _, out in rows if out == "error") >= 6
    ops = [(r.operation, r.outcome) for r in up.gateway.store.list_exchanges(limit=500)]
    assert ("Referrals/act", "error") in ops and ("Referrals/Create", "error") in ops
    assert all(patient not in r.detail for r in up.gateway.store.list_exchanges(limit=500))


async def test_unauthenticated_is_401(up, api):
    for method, url in [("POST", api), ("POST", f"{api}/ref-x/accept"),
                        ("GET", f"{api}/options"), ("GET", f"{api}/ref-x"),
                        ("GET", f"{api}/ref-x/packet"), ("POST", f"{api}/packet-preview")]:
        answer = await _call(method, url, None, {})
        assert answer.status_code == 401, (method, url)
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_packet_preview_reads_the_callers_own_node(up, api, tokens):
    patient = up.linked("county-a")[4]
    deadline = asyncio.get_running_loop().time() + 90
    while True:   # a live read: on a busy machine the node may be marked away for a while
        answer = await _call("POST", f"{api}/packet-preview", tokens["county"],
                             {"patient_id": patient})
        if answer.status_code != 503 or asyncio.get_running_loop().time() > deadline:
            break
        _refused(answer, 503, "county-a's node")
        await asyncio.sleep(1)
    assert answer.status_code == 200, answer.text
    Bundle.model_validate(answer.json())
    first = answer.json()["entry"][0]["resource"]
    assert (first["resourceType"], first["id"]) == ("Patient", patient)
    _refused(await _call("POST", f"{api}/packet-preview", tokens["county"],
                         {"patient_id": "no-such-patient"}), 404, "has no Patient")
    _refused(await _call("POST", f"{api}/packet-preview", tokens["county"], {}), 400,
             "patient", "patient_id")
    rows = [r for r in up.gateway.store.list_exchanges(limit=500)
            if r.operation == "Referrals/PacketPreview"]
    assert {r.outcome for r in rows} == {"ok", "error"}
    assert all(r.patient_ref for r in rows if r.outcome == "ok")     # a hash
    assert all(patient not in r.detail and r.patient_ref != patient for r in rows)
