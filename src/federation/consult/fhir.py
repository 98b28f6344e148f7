"""The FHIR R4 resources of a consult: ServiceRequest (what is asked), Task (where it
stands, owned by a specialist pool, then by the claimant), Appointment (an interactive
session with its meeting link), DiagnosticReport (the specialist's report), Provenance
(its signature), PractitionerRole (a pool's members and availability) and the Bundles
that travel to node inboxes. Generic helpers (references, bundles, validation) are the
referral's (:mod:`federation.referral.fhir`). Plain dicts; no I/O here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from federation.consult.rules import Pool
from federation.referral.fhir import (
    PRIORITY,
    bundle,
    iso,
    org_ref,
    patient_ref,
    practitioner_ref,
    validated,
)
from federation.workflow.records import TaskRow

__all__ = ["CONSULT_SYSTEM", "BUSINESS_STATUS_SYSTEM", "KIND_CATEGORY", "service_request",
           "task_resource", "appointment", "practitioner_role", "report_bundle", "bundle",
           "validated", "iso", "study_reference", "practitioner_ref", "REPORT_MARK_SYSTEM",
           "ACK_DUE_URL", "SLOT_MINUTES_URL", "POOL_SYSTEM"]

CONSULT_SYSTEM = "urn:federation:consult"
BUSINESS_STATUS_SYSTEM = "urn:federation:consult:business-status"
POOL_SYSTEM = "urn:federation:consult:pool"
STUDY_SYSTEM = "urn:federation:consult:study"
REPORT_MARK_SYSTEM = "urn:federation:consult:report"
FLAG_SYSTEM = "urn:federation:consult:flag"
#: Task extension: the instant by which the pool must claim (acknowledge) the request
ACK_DUE_URL = f"{CONSULT_SYSTEM}:acknowledge-by"
#: PractitionerRole extension: how long each of the pool's slots is, in minutes
SLOT_MINUTES_URL = f"{CONSULT_SYSTEM}:slot-minutes"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
#: DiagnosticReport.category (HL7 v2 table 0074, diagnostic service section) per kind
KIND_CATEGORY = {"imaging": ("RAD", "Radiology"), "ecg": ("EC", "Electrocardiac"),
                 "pathology": ("PAT", "Pathology"), "ultrasound": ("RUS", "Radiology Ultrasound"),
                 "case-discussion": ("OTH", "Other")}
_KIND_TEXT = {"imaging": "影像会诊 imaging consult", "ecg": "心电会诊 ECG consult",
              "pathology": "病理会诊 pathology consult", "ultrasound": "超声会诊 ultrasound consult",
              "case-discussion": "病例讨论 case discussion"}


def study_reference(study: Mapping[str, Any]) -> dict[str, Any]:
    """A study kept at the origin site, as the request names it (id, kind, objects)."""
    return {"type": "ImagingStudy" if study.get("kind") == "dicom" else "Media",
            "identifier": {"system": STUDY_SYSTEM, "value": study["study_id"]},
            "display": f"{study.get('kind', 'study')} {study['study_id']} "
                       f"({len(study.get('objects', []))} object(s), kept at the origin site)"}


def service_request(consult_id: str, *, kind: str, mode: str, urgency: str, pool: Pool,
                    requester_site: str, requester_user: str, patient_id: str,
                    person_id: str | None, question: str, reason: Mapping[str, str],
                    studies: list[Mapping[str, Any]], authored: dt.datetime) -> dict[str, Any]:
    code, display = KIND_CATEGORY[kind]
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": consult_id,
        "identifier": [{"system": CONSULT_SYSTEM, "value": consult_id}],
        "status": "active", "intent": "order", "priority": PRIORITY[urgency],
        "category": [{"coding": [{"system": V2_0074, "code": code, "display": display}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "11429006",
                             "display": "Consultation"}],
                 "text": f"{_KIND_TEXT[kind]} ({mode})"},
        "subject": patient_ref(requester_site, patient_id, person_id),
        "authoredOn": iso(authored),
        "requester": practitioner_ref(requester_site, requester_user),
        "performer": [org_ref(pool.site_id)],
        "performerType": {"coding": [{"system": POOL_SYSTEM, "code": pool.pool_id}],
                          "text": pool.name},
        "note": [{"text": question}],
    }
    coding = {k: v for k, v in reason.items() if k in ("system", "code", "display") and v}
    if coding.get("code"):
        concept: dict[str, Any] = {"coding": [coding]}
        if reason.get("text") or coding.get("display"):     # FHIR strings are never empty
            concept["text"] = reason.get("text") or coding["display"]
        body["reasonCode"] = [concept]
    if studies:
        body["supportingInfo"] = [study_reference(s) for s in studies]
    return body


def task_resource(row: TaskRow) -> dict[str, Any]:
    """The consult's Task as it stands (built from the stored row)."""
    a = row.attributes
    body: dict[str, Any] = {
        "resourceType": "Task", "id": row.task_id,
        "meta": {"versionId": str(row.version), "lastUpdated": iso(row.updated_at)},
        "identifier": [{"system": CONSULT_SYSTEM, "value": row.task_id}],
        "basedOn": [{"reference": f"ServiceRequest/{row.task_id}"}],
        "status": row.status,
        "businessStatus": {"coding": [{"system": BUSINESS_STATUS_SYSTEM,
                                       "code": row.business_status}],
                           "text": row.business_status},
        "intent": "order", "priority": PRIORITY.get(row.urgency, "routine"),
        "code": {"text": f"{_KIND_TEXT.get(row.category, row.category)} ({a.get('mode')})"},
        "for": patient_ref(row.requester_site, row.patient_id, row.person_id),
        "authoredOn": iso(row.created_at), "lastModified": iso(row.updated_at),
        "requester": practitioner_ref(row.requester_site, row.requester_user),
        "owner": (practitioner_ref(*row.assignee.split("/", 1)) if row.assignee
                  else org_ref(row.owner_site)),
        "performerType": [{"coding": [{"system": POOL_SYSTEM,
                                       "code": row.owner_department or ""}]}],
    }
    if row.ack_due_at or row.complete_due_at:
        body["restriction"] = {"period": {k: v for k, v in (
            ("start", iso(row.created_at)), ("end", iso(row.complete_due_at))) if v}}
    if row.ack_due_at:      # FHIR Task has no acknowledgement deadline of its own
        body["extension"] = [{"url": ACK_DUE_URL, "valueDateTime": iso(row.ack_due_at)}]
    if row.escalated_at is not None:
        body["meta"]["tag"] = [{"system": FLAG_SYSTEM, "code": "escalated"}]
    if a.get("appointment_start"):
        body["executionPeriod"] = {"start": a.get("session_started") or a["appointment_start"]}
        if a.get("session_ended"):
            body["executionPeriod"]["end"] = a["session_ended"]
    if a.get("report"):
        body["output"] = [{"type": {"text": "consult report"},
                           "valueReference": {"reference": a["report"]}}]
    return body


def appointment(row: TaskRow, start: dt.datetime, minutes: int, link: str,
                participants: list[tuple[str, str]], *, status: str = "booked"
                ) -> dict[str, Any]:
    """The interactive session (FHIR Appointment) in a pool slot, with its meeting link."""
    people = [{"actor": practitioner_ref(site, user), "status": "accepted"}
              for site, user in participants]
    people.append({"actor": practitioner_ref(row.requester_site, row.requester_user),
                   "status": "needs-action"})
    return {
        "resourceType": "Appointment", "id": f"{row.task_id}-session", "status": status,
        "description": "interactive remote consultation (交互会诊)",
        "start": iso(start), "end": iso(start + dt.timedelta(minutes=minutes)),
        "basedOn": [{"reference": f"ServiceRequest/{row.task_id}"}],
        "supportingInformation": [{"reference": f"Task/{row.task_id}"}],
        "participant": people,
        "extension": [{"url": f"{CONSULT_SYSTEM}:meeting-link", "valueUrl": link}],
    }


def practitioner_role(pool: Pool, user_id: str | None = None) -> dict[str, Any]:
    """A pool as a PractitionerRole: its site, service and weekly availability."""
    s = pool.slots
    body: dict[str, Any] = {
        "resourceType": "PractitionerRole", "id": pool.pool_id + (f"-{user_id}" if user_id else ""),
        "active": True, "organization": org_ref(pool.site_id),
        "code": [{"coding": [{"system": POOL_SYSTEM, "code": pool.pool_id}], "text": pool.name}],
        "specialty": [{"coding": [{"system": V2_0074, "code": KIND_CATEGORY[pool.kind][0]}],
                       "text": pool.kind}],
        "availableTime": [{"daysOfWeek": list(s.days),
                           "availableStartTime": s.start.strftime("%H:%M:%S"),
                           "availableEndTime": s.end.strftime("%H:%M:%S")}],
        # slots cut from availableTime (FHIR keeps their length on Schedule/Slot)
        "extension": [{"url": SLOT_MINUTES_URL, "valueInteger": s.minutes}],
    }
    if user_id:
        body["practitioner"] = practitioner_ref(pool.site_id, user_id)
    return body


def report_bundle(bundle_id: str, row: TaskRow, report: dict[str, Any],
                  provenance: dict[str, Any], history: list[dict[str, Any]],
                  when: dt.datetime) -> dict[str, Any]:
    """What the requester's node receives: the Task, the signed DiagnosticReport, its
    Provenance, and the earlier versions (marked superseded) when it was amended."""
    return bundle(bundle_id, [task_resource(row), report, provenance, *history], when)
