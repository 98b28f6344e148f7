"""The FHIR R4 resources of a referral: ServiceRequest (what is asked), Task (where it
stands; FHIR R4 §12.1 and the IHE 360X closed loop), Consent, Appointment, the result
(DocumentReference), CarePlan (a downward referral's follow-up plan), Communication
(notes and alerts) and the Bundles that travel to node inboxes.

Every builder returns a plain dict; :func:`validated` checks one against the
``fhir.resources`` R4B models. No I/O here.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from federation.errors import InvalidInput
from federation.fhir_systems import EMPI_PERSON_SYSTEM, SITE_ID_SYSTEM, site_urn
from federation.workflow.records import TaskRow

__all__ = [
    "BUSINESS_STATUS_SYSTEM", "REJECT_REASON_SYSTEM", "REFERRAL_SYSTEM", "FLAG_SYSTEM", "ICD10",
    "PRIORITY", "org_ref", "patient_ref", "service_request", "task_resource", "consent",
    "appointment", "document", "care_plan", "communication", "bundle", "validated",
    "iso", "service_request_status",
]

BUSINESS_STATUS_SYSTEM = "urn:federation:referral:business-status"
REJECT_REASON_SYSTEM = "urn:federation:referral:reject-reason"
REFERRAL_SYSTEM = "urn:federation:referral"
FLAG_SYSTEM = "urn:federation:referral:flag"
SNOMED = "http://snomed.info/sct"
#: diagnosis codes (the national edition GB/T 14396 shares the system)
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
#: FHIR request-priority for each consortium urgency
PRIORITY = {"routine": "routine", "urgent": "urgent", "emergency": "stat"}
_DIRECTION_TEXT = {"upward": "upward referral (上转)", "downward": "downward referral (下转)"}


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat(timespec="seconds")


def org_ref(site_id: str) -> dict[str, Any]:
    return {"reference": f"Organization/{site_id}", "type": "Organization",
            "identifier": {"system": SITE_ID_SYSTEM, "value": site_id}}


def patient_ref(site_id: str, patient_id: str, person_id: str | None) -> dict[str, Any]:
    """The patient as the requesting site knows them, with the EMPI person id."""
    ref: dict[str, Any] = {"reference": f"Patient/{patient_id}", "type": "Patient",
                           "display": f"patient {patient_id} at {site_id}"}
    if person_id:
        ref["identifier"] = {"system": EMPI_PERSON_SYSTEM, "value": person_id}
    return ref


def practitioner_ref(site_id: str, user_id: str) -> dict[str, Any]:
    return {"reference": f"Practitioner/{user_id}", "type": "Practitioner",
            "identifier": {"system": f"{site_urn(site_id)}:practitioner", "value": user_id},
            "display": f"{user_id} at {site_id}"}


def service_request(task_id: str, *, direction: str, urgency: str, requester_site: str,
                    requester_user: str, target_site: str, department: str | None,
                    patient_id: str, person_id: str | None, reason: Mapping[str, str],
                    notes: str, authored: dt.datetime, based_on: str | None = None,
                    replaces: str | None = None) -> dict[str, Any]:
    """What the requester asks for (FHIR R4 ServiceRequest), ``basedOn`` the upward
    referral for a downward one and ``replaces`` the first for a redirected one."""
    coding = {k: v for k, v in reason.items() if k in ("system", "code", "display") and v}
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": task_id,
        "identifier": [{"system": REFERRAL_SYSTEM, "value": task_id}],
        "status": "active", "intent": "order", "priority": PRIORITY[urgency],
        "category": [{"coding": [{"system": SNOMED, "code": "3457005",
                                  "display": "Patient referral"}]}],
        "code": {"text": _DIRECTION_TEXT.get(direction, direction)},
        "subject": patient_ref(requester_site, patient_id, person_id),
        "authoredOn": iso(authored),
        "requester": practitioner_ref(requester_site, requester_user),
        "performer": [org_ref(target_site)],
    }
    concept: dict[str, Any] = {}
    if coding.get("code"):
        concept["coding"] = [coding]
    if reason.get("text") or coding.get("display"):
        concept["text"] = reason.get("text") or coding["display"]
    if concept:
        body["reasonCode"] = [concept]
    if department:
        body["performerType"] = {"text": department}
    if notes:
        body["note"] = [{"text": notes}]
    if based_on:
        body["basedOn"] = [{"reference": f"ServiceRequest/{based_on}"}]
    if replaces:
        body["replaces"] = [{"reference": f"ServiceRequest/{replaces}"}]
    return body


def service_request_status(status: str, business: str) -> str:
    """The ServiceRequest's status for its Task's: revoked when rejected or cancelled."""
    if status in ("rejected", "cancelled"):
        return "revoked"
    return "completed" if status == "completed" else "active"


def task_resource(row: TaskRow) -> dict[str, Any]:
    """The referral's Task as it stands (built from the stored row, version = row's)."""
    a = row.attributes
    body: dict[str, Any] = {
        "resourceType": "Task", "id": row.task_id,
        "meta": {"versionId": str(row.version), "lastUpdated": iso(row.updated_at)},
        "identifier": [{"system": REFERRAL_SYSTEM, "value": row.task_id}],
        "basedOn": [{"reference": f"ServiceRequest/{row.task_id}"}],
        "status": row.status,
        "businessStatus": {"coding": [{"system": BUSINESS_STATUS_SYSTEM,
                                       "code": row.business_status}],
                           "text": row.business_status},
        "intent": "order", "priority": PRIORITY.get(row.urgency, "routine"),
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}]},
        "focus": {"reference": f"ServiceRequest/{row.task_id}"},
        "for": patient_ref(row.requester_site, row.patient_id, row.person_id),
        "authoredOn": iso(row.created_at), "lastModified": iso(row.updated_at),
        "requester": org_ref(row.requester_site),
        "owner": org_ref(row.owner_site),
        "input": [{"type": {"text": "referral packet"},
                   "valueReference": {"reference": f"Bundle/{row.task_id}-packet"}}],
    }
    if row.escalated_at is not None:
        body["meta"]["tag"] = [{"system": FLAG_SYSTEM, "code": "escalated",
                                "display": f"escalated {iso(row.escalated_at)}"}]
    if row.replaces:
        body["basedOn"].append({"reference": f"Task/{row.replaces}"})
    if row.ack_due_at is not None:
        body["restriction"] = {"period": {"end": iso(row.ack_due_at)}}
    if row.owner_department:
        body["note"] = [{"text": f"department: {row.owner_department}"}]
    reason = a.get("status_reason") or {}
    if reason.get("code") or reason.get("text"):
        body["statusReason"] = {"text": reason.get("text") or reason["code"]}
        if reason.get("code"):
            body["statusReason"]["coding"] = [{"system": REJECT_REASON_SYSTEM,
                                               "code": reason["code"]}]
    if a.get("appointment_start"):
        body["executionPeriod"] = {"start": a["appointment_start"]}
    if a.get("redirected_to"):
        body.setdefault("note", []).append(
            {"text": f"redirected to {a['redirected_to']} as referral {a['redirect_task']}"})
    if a.get("admission_note"):
        body.setdefault("note", []).append({"text": f"admission: {a['admission_note']}"})
    outputs = []
    if a.get("result"):
        outputs.append({"type": {"text": "result"},
                        "valueReference": {"reference": a["result"]}})
    for ref in a.get("follow_ups", []):
        outputs.append({"type": {"text": "follow-up visit"}, "valueReference": {"reference": ref}})
    if outputs:
        body["output"] = outputs
    return body


def consent(consent_id: str, *, site_id: str, patient_id: str, person_id: str | None,
            target_site: str, method: str, recorded_by: str, when: dt.datetime) -> dict[str, Any]:
    """The patient's consent to share their record with the target for treatment
    (FHIR R4 Consent: scope patient-privacy, OPTIN, provision permit TREAT)."""
    return {
        "resourceType": "Consent", "id": consent_id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0",
                                  "display": "Patient Consent"}]},
                     {"text": f"{method} consent to referral"}],
        "patient": patient_ref(site_id, patient_id, person_id),
        "dateTime": iso(when),
        "organization": [org_ref(site_id)],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "OPTIN"}]},
        "verification": [{"verified": True, "verificationDate": iso(when)}],
        "provision": {
            "type": "permit",
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                         "code": "TREAT"}],
            "actor": [{"role": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "IRCP"}]}, "reference": org_ref(target_site)}],
        },
        "performer": [practitioner_ref(site_id, recorded_by)],
    }


def appointment(row: TaskRow, start: dt.datetime, *, status: str = "booked",
                minutes: int = 30) -> dict[str, Any]:
    return {
        "resourceType": "Appointment", "id": f"{row.task_id}-appt", "status": status,
        "basedOn": [{"reference": f"ServiceRequest/{row.task_id}"}],
        "start": iso(start), "end": iso(start + dt.timedelta(minutes=minutes)),
        "description": row.owner_department or "referral visit",
        "participant": [
            {"actor": patient_ref(row.requester_site, row.patient_id, row.person_id),
             "status": "accepted"},
            {"actor": {"reference": f"Location/{row.owner_site}",
                       "display": row.owner_department or row.owner_site},
             "status": "accepted"}],
    }


def document(doc_id: str, row: TaskRow, *, title: str, text: str, when: dt.datetime,
             loinc: str, author_site: str, author_user: str) -> dict[str, Any]:
    """A clinical note (consult note, discharge summary, follow-up note) as a FHIR
    DocumentReference with the text attached inline (UTF-8, base64)."""
    return {
        "resourceType": "DocumentReference", "id": doc_id, "status": "current",
        "type": {"coding": [{"system": LOINC, "code": loinc}], "text": title},
        "subject": patient_ref(row.requester_site, row.patient_id, row.person_id),
        "date": iso(when),
        "author": [practitioner_ref(author_site, author_user)],
        "custodian": org_ref(author_site),
        "description": title,
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": base64.b64encode(text.encode()).decode(),
                                    "title": title}}],
        "context": {"related": [{"reference": f"ServiceRequest/{row.task_id}"}]},
    }


def care_plan(plan_id: str, *, task_id: str, site_id: str, patient_id: str,
              person_id: str | None, author_site: str, author_user: str,
              visits: Iterable[tuple[dt.datetime, str]], created: dt.datetime,
              title: str) -> dict[str, Any]:
    """A downward referral's rehab / follow-up plan with its scheduled visits."""
    return {
        "resourceType": "CarePlan", "id": plan_id, "status": "active", "intent": "plan",
        "title": title, "created": iso(created),
        "basedOn": [{"reference": f"ServiceRequest/{task_id}"}],
        "subject": patient_ref(site_id, patient_id, person_id),
        "author": practitioner_ref(author_site, author_user),
        "activity": [{"detail": {
            "kind": "Appointment", "status": "scheduled", "description": what,
            "scheduledPeriod": {"start": iso(when)}}} for when, what in visits],
    }


def communication(comm_id: str, row: TaskRow, *, text: str, sender_site: str | None,
                  recipient_site: str, when: dt.datetime, alert: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Communication", "id": comm_id, "status": "completed",
        "about": [{"reference": f"Task/{row.task_id}"}],
        "subject": patient_ref(row.requester_site, row.patient_id, row.person_id),
        "sent": iso(when), "recipient": [org_ref(recipient_site)],
        "payload": [{"contentString": text}],
    }
    if sender_site:
        body["sender"] = org_ref(sender_site)
    if alert:
        body["priority"] = "urgent"
        body["category"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/communication-category",
            "code": "alert"}]}]
    return body


def bundle(bundle_id: str, resources: Iterable[dict[str, Any]], when: dt.datetime) -> dict[str, Any]:
    return {"resourceType": "Bundle", "id": bundle_id, "type": "collection",
            "timestamp": iso(when), "entry": [{"resource": r} for r in resources]}


def validated(resource: dict[str, Any], what: str = "") -> dict[str, Any]:
    """Check ``resource`` against the FHIR R4 models; InvalidInput names the first error
    (never the content)."""
    kind = resource.get("resourceType")
    try:
        get_fhir_model_class(str(kind)).model_validate(resource)
    except (KeyError, ValueError, ValidationError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"msg": str(exc)}
        where = ".".join(str(p) for p in first.get("loc", ())) or "resource"
        raise InvalidInput(f"{what or kind} is not valid FHIR R4 {kind}: {where}: "
                           f"{first.get('msg', 'invalid')}") from None
    return resource
