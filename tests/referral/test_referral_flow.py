"""Two-way referral end to end over gRPC with mutual TLS: staff with person certificates
and nodes acting for their staff, the packet from the origin node, inbox deliveries,
the closed loop, and every refusal with its clear error (and nothing sent)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json

import pytest

from federation.errors import (
    ConcurrentUpdate,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
)
from federation.referral.moves import Details
from federation.referral.service import NewReferral
from tests.referral.conftest import about, bundle, upward

pytestmark = pytest.mark.asyncio(loop_scope="module")
IN_AN_HOUR = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)


async def test_upward_referral_closes_its_loop(up):
    patient = up.linked("county-a")[0]
    doctor, specialist = up.client("dr-wang"), up.client("dr-li")
    ref, created = await doctor.create(upward(patient))
    assert created and (ref.status, ref.business_status) == ("requested", "awaiting-triage")
    assert (ref.requester_site, ref.owner_site, ref.requester_user) == ("county-a", "city-1",
                                                                       "dr-wang")
    assert ref.person_id and ref.task["for"]["identifier"]["value"] == ref.person_id

    items = await up.inbox("city-1", lambda i: bundle(i, ref.id, "packet"))
    first, packet = bundle(items, ref.id, "referral"), bundle(items, ref.id, "packet")
    assert [e["resource"]["resourceType"] for e in first["entry"]] == [
        "Task", "ServiceRequest", "Consent"]
    consent = first["entry"][2]["resource"]
    assert consent["provision"]["actor"][0]["reference"]["identifier"]["value"] == "city-1"
    kinds = [e["resource"]["resourceType"] for e in packet["entry"]]
    assert kinds[:2] == ["Task", "Patient"] and {"Encounter", "Condition"} <= set(kinds)
    assert all(e["resource"]["meta"]["source"] == "urn:federation:site:county-a"
               for e in packet["entry"][1:])
    order = [i.sequence for i in items if i.item_id.startswith(ref.id)]
    assert order == sorted(order)               # the referral first, then its packet

    booked = await specialist.act(ref.id, "accept", Details(
        appointment_start=IN_AN_HOUR, admission_note="cardiology ward, bed 12"))
    assert (booked.business_status, booked.version) == ("booked", 4)  # create, packet, 2 moves
    assert booked.task["executionPeriod"]["start"].startswith(IN_AN_HOUR.strftime("%Y-%m-%d"))
    await specialist.act(ref.id, "note", Details(note="please bring the ECG"))
    await specialist.act(ref.id, "start")
    done = await specialist.act(ref.id, "complete", Details(
        result_text="STEMI; primary PCI to LAD. Discharged on day 5.",
        result_kind="discharge-summary"))
    assert (done.status, done.business_status) == ("completed", "result-sent")

    # the county's node stores the result and acks it: that receipt closes the loop
    items = await up.inbox("county-a", lambda i: about(i, ref.id, "report"))
    (report,) = about(items, ref.id, "report")
    result = next(e["resource"] for e in report["entry"]
                  if e["resource"]["resourceType"] == "DocumentReference")
    text = base64.b64decode(result["content"][0]["attachment"]["data"]).decode()
    assert "primary PCI" in text and result["type"]["coding"][0]["code"] == "18842-5"
    for _ in range(100):
        detail = await doctor.get(ref.id)
        if detail.referral.business_status == "closed":
            break
        await asyncio.sleep(0.05)
    assert detail.referral.business_status == "closed"
    assert [h["action"] for h in detail.history if h["action"] != "attach-packet"] == [
        "create", "accept", "book", "note", "start", "complete", "receive-result"]
    assert [h["action"] for h in detail.history].count("attach-packet") == 1
    assert detail.history[-1]["actor"] == "system"
    # the requester saw every change: a notice per move of the city, in order (the last
    # one, 'closed', is queued when the loop closes and may still be on its way)
    def seen() -> list[str]:
        notices = [json.loads(i.payload) for i in up.nodes["county-a"].inbox.items()
                   if i.kind == "notice" and ref.id in i.item_id]
        return [n.get("businessStatus", {}).get("text") or n["resourceType"] for n in notices]
    for _ in range(100):
        if "closed" in seen():
            break
        await asyncio.sleep(0.05)
    assert seen() == ["accepted", "booked", "Communication", "in-visit", "closed"]
    seqs = [i.sequence for i in up.nodes["county-a"].inbox.items() if ref.id in i.item_id]
    assert seqs == sorted(seqs)
    for _ in range(100):      # the last notices are still on their way to the nodes
        detail = await doctor.get(ref.id)
        if all(d["acknowledged"] for d in detail.deliveries):
            break
        await asyncio.sleep(0.05)
    assert all(d["acknowledged"] for d in detail.deliveries)
    # exchange log: who did what, with a patient hash, never the patient id in clear
    rows = [r for r in up.gateway.store.list_exchanges(limit=50)
            if r.operation.startswith("Referrals/")]
    assert {r.operation for r in rows} >= {"Referrals/Create", "Referrals/accept",
                                            "Referrals/complete"}
    assert all(patient not in (r.patient_ref or "") + r.detail for r in rows)


async def test_refusals_are_clear_and_send_nothing(up):
    patient = up.linked("county-a")[0]
    doctor = up.client("dr-wang")
    pending = len(up.gateway.store.pending_for("city-1"))
    _, before = await up.client("admin-zhao").search()
    with pytest.raises(InvalidInput, match="consent .* is required.*nothing was sent"):
        await doctor.create(upward(patient, consent_method=None))
    with pytest.raises(PermissionDenied, match="not allowed; the consortium's rules allow: "
                                               "tier:city"):
        await doctor.create(upward(patient, target_site="county-b"))
    with pytest.raises(NotFound, match="not .*in the master patient index"):
        await doctor.create(upward("no-such-patient"))
    with pytest.raises(PermissionDenied, match="staff role doctor or specialist"):
        await up.client("nurse-chen").create(upward(up.linked("city-1")[0],
                                                    direction="downward"))
    with pytest.raises(InvalidInput, match="urgency must be one of"):
        await doctor.create(upward(patient, urgency="whenever"))
    assert len(up.gateway.store.pending_for("city-1")) == pending
    refused = [r for r in up.gateway.store.list_exchanges(limit=20)
               if r.operation == "Referrals/Create" and r.outcome == "error"]
    assert len(refused) >= 5 and all(patient not in r.detail for r in refused)
    assert any(r.status_code == "not-found" for r in refused)
    _, total = await up.client("admin-zhao").search()
    assert total == before


async def test_only_the_parties_act_and_read(up):
    ref, _ = await up.client("dr-wang").create(upward(up.linked("county-a")[0]))
    township = up.client("dr-ma")
    with pytest.raises(PermissionDenied, match="dr-ma .* at township-a1 may not accept"):
        await township.act(ref.id, "accept", Details(admission_note="x"))
    with pytest.raises(NotFound):
        await township.get(ref.id)
    assert ref.id not in [r.id for r in (await township.search(limit=200))[0]]
    with pytest.raises(PermissionDenied, match="may not accept"):   # requester ≠ owner
        await up.client("dr-wang").act(ref.id, "accept", Details(admission_note="x"))
    with pytest.raises(PermissionDenied, match="staff role"):
        await up.client("nurse-chen").act(ref.id, "accept", Details(admission_note="x"))
    with pytest.raises(InvalidTransition, match="cannot complete referral .*: it is requested"):
        await up.client("dr-li").act(ref.id, "complete", Details(result_text="x"))
    await up.client("dr-wang").act(ref.id, "cancel", Details(reason_text="went elsewhere"))
    with pytest.raises(InvalidTransition, match="cannot accept .*: it is cancelled"):
        await up.client("dr-li").act(ref.id, "accept", Details(admission_note="x"))
    admin = up.client("admin-zhao")                  # regional admins read everything
    assert (await admin.get(ref.id)).referral.business_status == "cancelled"
    with pytest.raises(PermissionDenied, match="operator"):
        from federation.referral.client import ReferralClient
        async with ReferralClient(up.address, up.pki.material("tester")) as operator:
            assert (await operator.get(ref.id)).referral.id == ref.id
            await operator.act(ref.id, "note", Details(note="x"))


async def test_a_node_acts_for_its_staff_on_its_own_site_only(up):
    patient = up.linked("county-a")[0]
    node = up.client("county-a", practitioner=("dr-wang", "doctor"))
    ref, _ = await node.create(upward(patient, request_id="his-order-77"))
    again, created = await node.create(upward(patient, request_id="his-order-77"))
    assert again.id == ref.id and not created
    assert ref.requester_site == "county-a" and ref.requester_user == "dr-wang"
    items = await up.inbox("city-1", lambda i: bundle(i, ref.id, "packet"))
    assert len(about(items, ref.id, "referral")) == 2      # one referral + packet for two calls
    with pytest.raises(InvalidInput, match="must name the practitioner"):
        await up.client("county-a").create(upward(patient))
    with pytest.raises(PermissionDenied, match="a node may vouch for"):
        await up.client("county-a", practitioner=("boss", "regional-admin")).create(
            upward(patient))
    with pytest.raises(InvalidInput, match="acts for its holder only"):
        await up.client("dr-li", practitioner=("dr-wang", "doctor")).act(
            ref.id, "accept", Details(admission_note="x"))
    city_node = up.client("city-1", practitioner=("dr-zhou", "doctor"))
    seen = (await city_node.get(ref.id)).referral.version
    accepted = await city_node.act(ref.id, "accept", Details(admission_note="ward 3"),
                                   expected_version=seen)
    assert accepted.business_status == "accepted" and accepted.version == seen + 1
    with pytest.raises(ConcurrentUpdate, match="reload it"):
        await city_node.act(ref.id, "start", expected_version=seen)


async def test_township_emergency_goes_straight_to_the_city(up):
    patient = up.linked("township-a1")[0]
    doctor = up.client("dr-ma")
    with pytest.raises(PermissionDenied, match="allow: parent"):
        await doctor.create(upward(patient, urgency="urgent"))
    ref, _ = await doctor.create(upward(patient, urgency="emergency"))
    assert ref.owner_site == "city-1" and ref.task["priority"] == "stat"
    routine, _ = await doctor.create(upward(patient, urgency="routine", target_site=None))
    assert routine.owner_site == "county-a"                 # its parent, by the rules


async def test_redirect_chains_a_new_referral(up):
    ref, _ = await up.client("dr-wang").create(upward(up.linked("county-a")[0]))
    redirected = await up.client("dr-li").act(ref.id, "redirect", Details(
        target_site="county-b", department="cardiology", reason_code="no-capacity"))
    assert (redirected.status, redirected.business_status) == ("cancelled", "redirected")
    new_id = redirected.redirected_to
    assert new_id and new_id != ref.id
    items = await up.inbox("county-b", lambda i: bundle(i, new_id, "packet"))
    first = bundle(items, new_id, "referral")
    sr = first["entry"][1]["resource"]
    assert sr["replaces"] == [{"reference": f"ServiceRequest/{ref.id}"}]
    assert {"reference": f"Task/{ref.id}"} in first["entry"][0]["resource"]["basedOn"]
    assert "Patient" in [e["resource"]["resourceType"] for e in
                         bundle(items, new_id, "packet")["entry"]]
    new = (await up.client("dr-xu").get(new_id)).referral
    assert (new.owner_site, new.requester_site, new.replaces) == ("county-b", "county-a", ref.id)
    with pytest.raises(InvalidInput, match="third site"):
        await up.client("dr-xu").act(new_id, "redirect", Details(target_site="county-a"))
    with pytest.raises(InvalidInput, match="coded reason"):
        await up.client("dr-xu").act(new_id, "reject", Details(reason_code="nope"))
    rejected = await up.client("dr-xu").act(new_id, "reject", Details(
        reason_code="out-of-scope", reason_text="needs cath lab"))
    assert rejected.task["statusReason"]["coding"][0]["code"] == "out-of-scope"


async def test_downward_referral_with_follow_ups_back_to_the_specialist(up):
    at_county, at_city = up.shared("county-a", "city-1")
    ref, _ = await up.client("dr-wang").create(upward(at_county))
    specialist = up.client("dr-li")
    await specialist.act(ref.id, "accept", Details(admission_note="ward 3"))
    await specialist.act(ref.id, "start")
    await specialist.act(ref.id, "complete", Details(result_text="recovering"))
    with pytest.raises(InvalidInput, match="follow-up plan"):
        await specialist.create(NewReferral(patient_id=at_city, direction="downward",
                                            target_site="county-a", consent_method="verbal",
                                            based_on=ref.id))
    down, _ = await specialist.create(NewReferral(
        patient_id=at_city, direction="downward", target_site="county-a",
        department="rehabilitation", consent_method="verbal", based_on=ref.id,
        discharge_summary="PCI day 1; stable; aspirin + clopidogrel 12 months",
        follow_ups=((7, "wound and ECG check"), (30, "lipids, blood pressure"))))
    assert down.based_on == ref.id and down.direction == "downward"
    items = await up.inbox("county-a", lambda i: bundle(i, down.id, "referral"))
    first = bundle(items, down.id, "referral")
    plan = next(e["resource"] for e in first["entry"] if e["resource"]["resourceType"] == "CarePlan")
    assert [a["detail"]["description"] for a in plan["activity"]] == [
        "wound and ECG check", "lipids, blood pressure"]
    assert first["entry"][1]["resource"]["basedOn"] == [{"reference": f"ServiceRequest/{ref.id}"}]
    assert "DocumentReference" in [e["resource"]["resourceType"] for e in first["entry"]]
    county = up.client("dr-wang")
    with pytest.raises(InvalidTransition, match="follow-up"):      # not before accepting
        await county.act(down.id, "follow-up", Details(note="seen"))
    await county.act(down.id, "accept", Details(appointment_start=IN_AN_HOUR))
    await county.act(down.id, "follow-up", Details(note="day 7: wound clean, ECG normal"))
    await county.act(down.id, "follow-up", Details(note="day 30: LDL 1.6, BP 128/80"))
    items = await up.inbox("city-1", lambda i: len(about(i, down.id, "report")) == 2)
    notes = [base64.b64decode(next(e["resource"] for e in r["entry"] if e["resource"][
        "resourceType"] == "DocumentReference")["content"][0]["attachment"]["data"]).decode()
        for r in about(items, down.id, "report")]
    assert notes == ["day 7: wound clean, ECG normal", "day 30: LDL 1.6, BP 128/80"]
    done = await county.act(down.id, "complete", Details(result_text="plan completed"))
    assert done.business_status == "result-sent"
    with pytest.raises(PermissionDenied, match="only that site"):
        await up.client("dr-xu").create(NewReferral(
            patient_id=up.linked("county-b")[0], direction="downward",
            target_site="township-b1", consent_method="verbal", based_on=ref.id,
            follow_ups=((7, "x"),)))
