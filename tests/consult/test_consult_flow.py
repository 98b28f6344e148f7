"""Remote consultation end to end over gRPC with mutual TLS: a township/county doctor asks,
a specialist of the city's pool claims, streams the study from the origin node through the
gateway, signs the report, the requester's node receives it and the requester's ack closes
the case; an amendment keeps the history; every refusal is clear and changes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from federation.consult.report import diagnostic_report, sign_report, verify_bundle
from federation.consult.service import NewConsult
from federation.consult.studies import CHUNK_SIZE
from federation.errors import IntegrityError, InvalidInput, NotFound, PermissionDenied
from federation.security.signing import Signer
from federation.store.models import ExchangeLog
from federation.synth.studies import write_blob_study, write_dicom_study, write_ecg_study

pytestmark = pytest.mark.asyncio(loop_scope="module")
ST_ELEVATION = {"system": "http://snomed.info/sct", "code": "164865005",
                "display": "ST elevation"}


def ask(patient: str, kind: str = "ecg", **over) -> NewConsult:
    fields = dict(patient_id=patient, kind=kind, question="胸痛2小时，请判读心电图",
                  urgency="urgent", consent_method="written",
                  reason={"system": "http://hl7.org/fhir/sid/icd-10", "code": "R07.4",
                          "display": "胸痛"})
    return NewConsult(**(fields | over))


async def inbox(world, site: str, want, timeout: float = 10.0) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [json.loads(i.payload) for i in world.nodes[site].inbox.items()]
        hits = [b for b in found if want(b)]
        if hits:
            return hits
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{site} inbox has no such item")
        await asyncio.sleep(0.05)


def exchange_ops(world, consult_id: str) -> list[tuple[str, str]]:
    with world.gateway.store.engine.connect() as conn:
        return [(r.operation, r.outcome) for r in conn.execute(
            select(ExchangeLog).where(ExchangeLog.correlation_id == consult_id)
            .order_by(ExchangeLog.id))]


async def test_an_ecg_consult_closes_its_loop_and_keeps_its_amended_history(
        world, tmp_path: Path) -> None:
    patient = world.linked("county-a")[0]
    folder = write_ecg_study(world.studies["county-a"], "ecg-flow-1", patient)
    doctor, li = world.consult("cdr-wang"), world.consult("csp-li")
    consult, created = await doctor.request(ask(patient, study_ids=("ecg-flow-1",)))
    assert created and (consult.status, consult.business_status) == ("requested",
                                                                     "awaiting-claim")
    assert (consult.hub_site, consult.pool, consult.assignee) == ("city-1", "city-1-ecg", "")
    first = await inbox(world, "city-1", lambda b: b.get("id") == f"{consult.id}-request")
    assert [e["resource"]["resourceType"] for e in first[0]["entry"]] == [
        "Task", "ServiceRequest", "Consent"]

    (mine,), total = await li.inbox()
    assert total >= 1 and mine.id == consult.id or any(
        c.id == consult.id for c in (await li.inbox(limit=50))[0])
    claimed = await li.act(consult.id, "claim")
    assert claimed.assignee == "city-1/csp-li" and claimed.business_status == "claimed"

    (got,) = await li.fetch_study(consult.id, "ecg-flow-1", tmp_path)
    original = (folder / "ecg-12lead.csv").read_bytes()
    assert got.path.read_bytes() == original and got.resumed_from == 0

    # the case material followed the request to the hub, as a referral's packet does
    (packet,) = await inbox(world, "city-1", lambda b: b.get("id") == f"{consult.id}-packet")
    kinds = [e["resource"]["resourceType"] for e in packet["entry"]]
    assert kinds[:2] == ["Task", "Patient"] and "Encounter" in kinds
    reported = await li.report(consult.id, "窦性心律，下壁导联ST段抬高，考虑急性下壁心肌梗死",
                               [ST_ELEVATION])
    assert (reported.status, reported.business_status) == ("completed", "reported")
    (delivery,) = await inbox(world, "county-a",
                              lambda b: b.get("id") == f"{consult.id}-r1-delivery")
    ((report_id, signer),) = verify_bundle(delivery, world.pki.ca.ca_pem)
    assert (report_id, signer.name) == (f"{consult.id}-r1", "csp-li")

    closed = await doctor.act(consult.id, "ack")
    assert (closed.status, closed.business_status) == ("completed", "closed")

    amended = await li.report(consult.id, "下壁心肌梗死；另见右室受累（V4R ST抬高）",
                              [ST_ELEVATION], amend=True)
    assert amended.business_status == "reported"      # an amendment is acknowledged again
    (second,) = await inbox(world, "county-a",
                            lambda b: b.get("id") == f"{consult.id}-r2-delivery")
    reports = {e["resource"]["id"]: e["resource"] for e in second["entry"]
               if e["resource"]["resourceType"] == "DiagnosticReport"}
    assert reports[f"{consult.id}-r2"]["status"] == "amended"
    assert reports[f"{consult.id}-r1"]["meta"]["tag"][0]["code"] == "superseded"
    assert len(verify_bundle(second, world.pki.ca.ca_pem)) == 2      # both still verify
    await doctor.act(consult.id, "ack")

    detail = await doctor.get(consult.id)
    assert {"Report.v1", "Report.v2", "Provenance.v1", "Provenance.v2"} <= set(detail.resources)
    assert [h["action"] for h in detail.history if h["action"] != "attach-packet"] == [
        "create", "claim", "report", "ack", "amend", "ack"]
    assert [h["action"] for h in detail.history].count("attach-packet") == 1
    ops = exchange_ops(world, consult.id)
    assert [op for op, ok in ops if ok == "ok" and op != "Consults/Get"] == [
        "Consults/Request", "Consults/claim", "Consults/FetchStudy", "Consults/report",
        "Consults/ack", "Consults/amend", "Consults/ack"]
    # every read of the case over gRPC is logged too (the client reads before a fetch,
    # before each report, and the requester read it once above)
    assert ops.count(("Consults/Get", "ok")) >= 4


async def test_an_interactive_imaging_consult_books_a_slot_with_a_meeting_link(
        world, tmp_path: Path) -> None:
    patient = world.linked("township-a1")[0]
    write_dicom_study(world.studies["township-a1"], "ct-flow-1", patient, slices=3)
    doctor, sun = world.consult("cdr-ma"), world.consult("csp-sun")
    consult, _ = await doctor.request(ask(patient, "imaging", mode="interactive",
                                          question="肺结节性质？", study_ids=("ct-flow-1",)))
    await sun.act(consult.id, "claim")
    downloads = await sun.fetch_study(consult.id, "ct-flow-1", tmp_path)
    import pydicom
    assert [pydicom.dcmread(d.path).PatientID for d in downloads] == [patient] * 3
    pool = world.gateway.consults.rules.pool("city-1-imaging")
    slot = pool.slots.upcoming(dt.datetime.now(dt.UTC), 1)[0]
    with pytest.raises(InvalidInput, match="not a free slot"):
        await sun.act(consult.id, "schedule", slot_start=slot + dt.timedelta(minutes=7))
    scheduled = await sun.act(consult.id, "schedule", slot_start=slot,
                              participants=["csp-li"])
    assert scheduled.business_status == "scheduled"
    detail = await doctor.get(consult.id)
    appt = detail.resources["Appointment"]
    assert appt["extension"][0]["valueUrl"].endswith(
        f"/consult/{consult.id}?slot={slot:%Y%m%dT%H%MZ}")
    assert [p["actor"]["identifier"]["value"] for p in appt["participant"]] == [
        "csp-sun", "csp-li", "cdr-ma"]
    from federation.referral.fhir import validated
    validated(appt)
    other, _ = await doctor.request(ask(patient, "imaging", mode="interactive",
                                        question="另一个问题"))
    await sun.act(other.id, "claim")
    with pytest.raises(InvalidInput, match="already have a session at"):
        await sun.act(other.id, "schedule", slot_start=slot)
    await sun.act(other.id, "decline")
    with pytest.raises(Exception, match="cannot report"):
        await sun.report(consult.id, "too early")
    await sun.act(consult.id, "start")
    held = await sun.act(consult.id, "end", note="discussed with the township doctor")
    assert held.business_status == "session-held"
    assert (await doctor.get(consult.id)).resources["Appointment"]["status"] == "fulfilled"
    reported = await sun.report(consult.id, "右上肺磨玻璃结节，建议3个月复查CT",
                                [{"system": "http://snomed.info/sct", "code": "427359005",
                                  "display": "Solitary nodule of lung"}])
    assert reported.business_status == "reported"


async def test_a_cut_stream_resumes_and_a_corrupted_chunk_is_refused(
        world, tmp_path: Path) -> None:
    patient = world.linked("county-a")[1]
    # large enough that the gateway cannot have handed the whole object to gRPC's
    # flow-control windows before the cut reaches it (the cut fetch's row says "error")
    size = 40 * CHUNK_SIZE + 999
    folder = write_blob_study(world.studies["county-a"], "slide-flow-1", patient, size)
    doctor, li = world.consult("cdr-wang"), world.consult("csp-li")
    consult, _ = await doctor.request(ask(patient, "pathology", question="请会诊病理切片",
                                          study_ids=("slide-flow-1",)))
    await li.act(consult.id, "claim")
    with pytest.raises(ConnectionError):
        await li.fetch_study(consult.id, "slide-flow-1", tmp_path, interrupt_after=5)
    (got,) = await li.fetch_study(consult.id, "slide-flow-1", tmp_path)
    assert got.resumed_from == 5 * CHUNK_SIZE and got.received == size - got.resumed_from
    data = (folder / "slide.tif").read_bytes()
    assert hashlib.sha256(got.path.read_bytes()).digest() == hashlib.sha256(data).digest()

    # the origin's copy changes after the request: the gateway refuses the changed chunk
    with (folder / "slide.tif").open("r+b") as f:
        f.seek(7 * CHUNK_SIZE + 10)
        f.write(b"tampered")
    again = tmp_path / "again"
    with pytest.raises(IntegrityError, match="chunk 7 of slide.tif .* does not match"):
        await li.fetch_study(consult.id, "slide-flow-1", again)
    assert (again / "slide-flow-1" / "slide.tif.part").stat().st_size == 7 * CHUNK_SIZE
    for _ in range(50):     # the cut stream's row is written as the gateway notices it
        fetches = [ok for op, ok in exchange_ops(world, consult.id)
                   if op == "Consults/FetchStudy"]
        if len(fetches) == 3:
            break
        await asyncio.sleep(0.1)
    assert sorted(fetches) == ["error", "error", "ok"]   # cut, whole, corrupted


async def test_refusals_are_clear_and_change_nothing(world, tmp_path: Path) -> None:
    patient, other = world.linked("county-a")[2], world.linked("county-a")[3]
    write_ecg_study(world.studies["county-a"], "ecg-flow-2", patient, seconds=2)
    doctor, li, sun = world.consult("cdr-wang"), world.consult("csp-li"), world.consult("csp-sun")
    with pytest.raises(InvalidInput, match="consent"):
        await doctor.request(ask(patient, consent_method=None))
    with pytest.raises(NotFound, match="no study 'ecg-flow-2' of Patient/"):
        await doctor.request(ask(other, study_ids=("ecg-flow-2",)))
    with pytest.raises(InvalidInput, match="at your own site; consult it locally"):
        await li.request(ask(patient))            # the hub asking its own pool
    consult, _ = await doctor.request(ask(patient, study_ids=("ecg-flow-2",)))
    with pytest.raises(PermissionDenied, match="specialist"):
        await world.consult("csp-zhou").act(consult.id, "claim")       # a doctor of the hub
    with pytest.raises(PermissionDenied, match="site it is addressed to"):
        await world.consult("csp-rogue").act(consult.id, "claim")      # another site's specialist
    with pytest.raises(NotFound):
        await world.consult("cdr-ma").get(consult.id)                 # not a party
    with pytest.raises(NotFound):
        await world.consult("cdr-ma").fetch_study(consult.id, "ecg-flow-2", tmp_path)
    with pytest.raises(PermissionDenied, match="may not read the studies"):
        async for _ in world.consult("cdr-ma").stream(consult.id, "ecg-flow-2",
                                                      "ecg-12lead.csv")(0):
            pass
    held = await li.act(consult.id, "claim")
    with pytest.raises(PermissionDenied, match="assigned to"):
        await sun.report(consult.id, "not mine")
    # signed with a key the consortium CA did not certify: refused, nothing stored
    foreign = world.pki.root / "foreign"
    detail = await li.get(consult.id)
    report = diagnostic_report(consult.id, 1, kind="ecg", conclusion="正常", codes=[],
                               author_site="city-1", author_user="csp-li",
                               subject=detail.consult.task["for"],
                               issued=dt.datetime.now(dt.UTC))
    rogue = sign_report(report, Signer((foreign / "foreign.crt").read_bytes(),
                                       (foreign / "foreign.key").read_bytes()))
    with pytest.raises(IntegrityError, match="CA did not issue"):
        await li.send_report(consult.id, rogue.report, rogue.signature, rogue.cert_pem)
    # signed by a colleague's certificate: not the caller's own report
    sun_signed = sign_report(report, Signer(world.pki.material("csp-sun").cert_pem,
                                            world.pki.material("csp-sun").key_pem))
    with pytest.raises(IntegrityError, match="names csp-li as its author but was signed by"):
        await li.send_report(consult.id, sun_signed.report, sun_signed.signature,
                             sun_signed.cert_pem)
    altered = sign_report(report, Signer(world.pki.material("csp-li").cert_pem,
                                         world.pki.material("csp-li").key_pem))
    with pytest.raises(IntegrityError, match="does not verify"):
        await li.send_report(consult.id, altered.report | {"conclusion": "改过"},
                             altered.signature, altered.cert_pem)
    with pytest.raises(InvalidInput, match="report and amend go through Report"):
        await li.act(consult.id, "report")
    after = await li.get(consult.id)
    assert after.consult.business_status == "claimed"
    assert after.consult.assignee == held.assignee
    assert [h["action"] for h in after.history if h["action"] != "attach-packet"] == [
        "create", "claim"]
    assert not any(k.startswith("Report") for k in after.resources)
    ops = exchange_ops(world, consult.id)
    assert ops.count(("Consults/report", "error")) == 5    # four reports and one Act


async def test_a_node_acts_for_its_staff_and_reads_its_own_consults(world) -> None:
    patient = world.linked("township-a1")[1]
    node = world.consult("township-a1", practitioner=("cdr-ma", "doctor"))
    consult, _ = await node.request(ask(patient, question="请判读心电图"))
    assert (consult.requester_site, consult.requester_user) == ("township-a1", "cdr-ma")
    own = world.consult("township-a1")          # the node itself, reading: no practitioner
    rows, _ = await own.inbox(limit=200)
    assert consult.id in [c.id for c in rows]
    assert all("township-a1" in (c.requester_site, c.hub_site) for c in rows)
    with pytest.raises(PermissionDenied, match="may vouch for"):
        await world.consult("city-1", practitioner=("zz-admin", "regional-admin")).act(
            consult.id, "cancel")
    cancelled = await node.act(consult.id, "cancel", note="patient transferred")
    assert (cancelled.status, cancelled.business_status) == ("cancelled", "cancelled")


async def test_a_report_signed_with_a_revoked_certificate_is_refused(world, tmp_path) -> None:
    patient = world.linked("county-a")[7]
    doctor, li = world.consult("cdr-wang"), world.consult("csp-li")
    consult, _ = await doctor.request(ask(patient))
    await li.act(consult.id, "claim")
    # csp-li's second certificate (a lost smart card), revoked by the CA
    lost = world.pki.ca.issue_person("csp-li", "city-1", ["specialist"], tmp_path / "csp-li")
    world.pki.ca.revoke(lost.serial, reason="key_compromise")
    detail = await li.get(consult.id)
    report = diagnostic_report(consult.id, 1, kind="ecg", conclusion="正常心电图", codes=[],
                               author_site="city-1", author_user="csp-li",
                               subject=detail.consult.task["for"],
                               issued=dt.datetime.now(dt.UTC))
    signed = sign_report(report, Signer(lost.cert_path.read_bytes(),
                                        lost.key_path.read_bytes()))
    await asyncio.sleep(2.1)          # the gateway re-reads the CRL every 2 s
    with pytest.raises(IntegrityError, match="revoked certificate"):
        await li.send_report(consult.id, signed.report, signed.signature, signed.cert_pem)
    good = await li.report(consult.id, "正常心电图")     # the current certificate still signs
    assert good.business_status == "reported"
