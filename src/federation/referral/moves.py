"""What each referral move writes: the attributes, FHIR resources and inbox messages of
one transition, as a :class:`~federation.workflow.records.Change`. Pure — the workflow
store calls these builders inside the transaction holding the referral's row lock.

Messages: every change is sent as the updated Task to the other party's node (the
requester sees every change, IHE 360X "status updates"); the packet goes to the target
as ``referral``; the result and each follow-up visit go back to the requester as
``report`` — the result's receipt by the requester's node closes the loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from federation.referral import fhir
from federation.security.principal import Principal
from federation.workflow.records import Change, Message, NewTask, Spawn, TaskRow
from federation.workflow.state import Rule

__all__ = ["Details", "builder", "notices", "payload", "row_of", "referral_bundle",
           "packet_bundle"]

Loader = Callable[[str], dict[str, Any] | None]
Builder = Callable[[TaskRow, Rule, Loader], Change]
RESULT_LOINC = {"consult-note": ("11488-4", "Consult note"),
                "discharge-summary": ("18842-5", "Discharge summary")}


@dataclass(frozen=True, slots=True)
class Details:
    """What a person gave with a move (each move reads the fields it needs)."""

    note: str = ""
    appointment_start: dt.datetime | None = None
    admission_note: str = ""
    reason_code: str = ""
    reason_text: str = ""
    result_text: str = ""
    result_kind: str = "consult-note"
    result_resource: dict[str, Any] | None = None
    visit_date: dt.datetime | None = None
    target_site: str = ""       # redirect: where to
    department: str = ""        # redirect: the department there


def payload(resource: dict[str, Any]) -> bytes:
    return orjson.dumps(resource)                 # compact UTF-8 JSON, as json.dumps gave


def recipients(actor: Principal, row: TaskRow) -> list[str]:
    """The parties' sites other than the actor's (both for the gateway or an admin)."""
    return [site for site in (row.requester_site, row.owner_site) if site != actor.site_id]


def notices(actor: Principal, purpose: str = "status") -> Callable[[TaskRow], list[Message]]:
    def build(after: TaskRow) -> list[Message]:
        task = payload(fhir.task_resource(after))
        return [Message(site, "notice", purpose, task, actor.site_id)
                for site in recipients(actor, after)]
    return build


def referral_bundle(row: TaskRow, service_request: dict[str, Any], consent: dict[str, Any],
                    extra: list[dict[str, Any]], when: dt.datetime) -> dict[str, Any]:
    """What the target receives first: the Task, the ServiceRequest, the Consent (and a
    downward referral's CarePlan and discharge summary)."""
    return fhir.bundle(f"{row.task_id}-referral",
                       [fhir.task_resource(row), service_request, consent, *extra], when)


def packet_bundle(row: TaskRow, packet: dict[str, Any], when: dt.datetime) -> dict[str, Any]:
    """What follows: the Task and the clinical packet from the origin node."""
    entries = [e["resource"] for e in packet.get("entry", [])]
    return fhir.bundle(f"{row.task_id}-packet", [fhir.task_resource(row), *entries], when)


def row_of(new: NewTask, now: dt.datetime) -> TaskRow:
    """The row a new task will have once stored (version 1), for its first messages."""
    return TaskRow(new.task_id, new.workflow, new.category, str(new.state.status),
                   new.state.business, 1, new.requester_site, new.requester_user,
                   new.owner_site, new.owner_department, new.patient_id, new.person_id,
                   new.urgency, new.request_id, new.based_on, new.replaces,
                   dict(new.attributes), now, now, new.ack_due_at, new.complete_due_at,
                   None, None, None, None)


# ---------------------------------------------------------------------------- moves


def builder(action: str, actor: Principal, d: Details, now: dt.datetime, *,
            redirect: Callable[[TaskRow, Loader], Spawn] | None = None) -> Builder:
    """The builder for ``action`` (already checked against the table by the store)."""
    plain = {"accept": _accept, "book": _book, "no-show": _no_show, "start": _start,
             "note": _note, "reject": _reject, "cancel": _cancel, "complete": _complete,
             "follow-up": _follow_up, "receive-result": _receive}
    if action == "redirect":
        assert redirect is not None

        def build(row: TaskRow, rule: Rule, load: Loader) -> Change:
            spawn = redirect(row, load)
            return Change(attributes={"redirected_to": spawn.task.owner_site,
                                      "redirect_task": spawn.task.task_id,
                                      "status_reason": _reason(d)},
                          messages=notices(actor), spawn=(spawn,), note=d.reason_text or None,
                          detail={"redirect_task": spawn.task.task_id})
        return build
    move = plain[action]
    return lambda row, rule, load: move(row, load, actor, d, now)


def _accept(row: TaskRow, load: Loader, actor: Principal, d: Details, now: dt.datetime) -> Change:
    attrs = {"admission_note": d.admission_note} if d.admission_note else {}
    return Change(attributes=attrs, messages=notices(actor), note=d.admission_note or None)


def _book(row: TaskRow, load: Loader, actor: Principal, d: Details, now: dt.datetime) -> Change:
    assert d.appointment_start is not None
    return Change(attributes={"appointment_start": fhir.iso(d.appointment_start)},
                  resources={"Appointment": fhir.appointment(row, d.appointment_start)},
                  messages=notices(actor), detail={"appointment": fhir.iso(d.appointment_start)})


def _appointment_status(load: Loader, status: str) -> dict[str, dict[str, Any]]:
    appt = load("Appointment")
    return {} if appt is None else {"Appointment": appt | {"status": status}}


def _no_show(row: TaskRow, load: Loader, actor: Principal, d: Details,
             now: dt.datetime) -> Change:
    return Change(resources=_appointment_status(load, "noshow"), messages=notices(actor),
                  note=d.note or None)


def _start(row: TaskRow, load: Loader, actor: Principal, d: Details, now: dt.datetime) -> Change:
    return Change(attributes={"visit_started": fhir.iso(now)},
                  resources=_appointment_status(load, "fulfilled"), messages=notices(actor),
                  note=d.note or None)


def _note(row: TaskRow, load: Loader, actor: Principal, d: Details, now: dt.datetime) -> Change:
    def messages(after: TaskRow) -> list[Message]:
        return [Message(site, "notice", "note", payload(fhir.communication(
            f"{after.task_id}-n{after.version}", after, text=d.note, sender_site=actor.site_id,
            recipient_site=site, when=now)), actor.site_id) for site in recipients(actor, after)]
    return Change(messages=messages, note=d.note)


def _reason(d: Details) -> dict[str, str]:
    return {"code": d.reason_code, "text": d.reason_text} if d.reason_code else \
        {"code": "", "text": d.reason_text}


def _reject(row: TaskRow, load: Loader, actor: Principal, d: Details, now: dt.datetime) -> Change:
    return Change(attributes={"status_reason": _reason(d)}, messages=notices(actor),
                  note=d.reason_text or None, detail={"reason": d.reason_code})


def _cancel(row: TaskRow, load: Loader, actor: Principal, d: Details, now: dt.datetime) -> Change:
    return Change(attributes={"status_reason": {"code": "", "text": d.reason_text or
                                                "cancelled by the requester"}},
                  resources=_appointment_status(load, "cancelled"), messages=notices(actor),
                  note=d.reason_text or None)


def _document(row: TaskRow, actor: Principal, d: Details, now: dt.datetime, doc_id: str,
              kind: str) -> dict[str, Any]:
    code, title = RESULT_LOINC.get(kind, ("11506-3", "Progress note"))
    return fhir.document(doc_id, row, title=title, text=d.result_text or d.note, when=now,
                         loinc=code, author_site=actor.site_id or row.owner_site,
                         author_user=actor.user_id)


def _complete(row: TaskRow, load: Loader, actor: Principal, d: Details,
              now: dt.datetime) -> Change:
    result = d.result_resource or _document(row, actor, d, now, f"{row.task_id}-result",
                                            d.result_kind)
    ref = f"{result['resourceType']}/{result['id']}"

    def messages(after: TaskRow) -> list[Message]:
        extra = [r for r in (load("Appointment"),) if r]
        report = fhir.bundle(f"{after.task_id}-result", [fhir.task_resource(after), result,
                                                         *extra], now)
        return [Message(after.requester_site, "report", "result", payload(report),
                        actor.site_id)]
    return Change(attributes={"result": ref}, resources={"Result": result}, messages=messages,
                  detail={"result": ref})


def _follow_up(row: TaskRow, load: Loader, actor: Principal, d: Details,
               now: dt.datetime) -> Change:
    visits = list(row.attributes.get("follow_ups", []))
    doc = _document(row, actor, d, d.visit_date or now, f"{row.task_id}-fu{len(visits) + 1}",
                    "follow-up")
    ref = f"DocumentReference/{doc['id']}"

    def messages(after: TaskRow) -> list[Message]:
        report = fhir.bundle(f"{after.task_id}-fu{len(visits) + 1}",
                             [fhir.task_resource(after), doc], now)
        return [Message(after.requester_site, "report", "follow-up", payload(report),
                        actor.site_id)]
    return Change(attributes={"follow_ups": [*visits, ref]},
                  resources={f"FollowUp{len(visits) + 1}": doc}, messages=messages,
                  note=d.note or d.result_text, detail={"visit": ref})


def _receive(row: TaskRow, load: Loader, actor: Principal, d: Details,
             now: dt.datetime) -> Change:
    return Change(attributes={"result_received": fhir.iso(now)}, messages=notices(actor),
                  detail={"by": actor.actor_id})
