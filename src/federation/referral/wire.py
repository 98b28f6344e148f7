"""Conversions between the Referrals protobuf messages and the referral's domain records —
the only place they meet (servicer and client call these at the edge)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from federation._proto.v1 import referral_pb2 as pb
from federation.errors import InvalidInput
from federation.referral import fhir
from federation.referral.moves import Details
from federation.referral.service import NewReferral, ReferralView
from federation.rpc.wire import from_timestamp, timestamp
from federation.workflow.records import NoticeRow, TaskRow
from federation.workflow.turnaround import Turnaround

__all__ = [
    "ReferralSummary", "ReferralDetail", "referral_to_proto", "referral_from_proto",
    "new_referral_to_proto", "new_referral_from_proto", "details_to_proto",
    "details_from_proto", "detail_to_proto", "detail_from_proto", "turnaround_to_proto",
    "turnaround_from_proto", "alert_to_proto",
]


@dataclass(frozen=True, slots=True)
class ReferralSummary:
    """A referral as a client sees it."""

    id: str
    version: int
    status: str
    business_status: str
    direction: str
    urgency: str
    requester_site: str
    requester_user: str
    owner_site: str
    department: str
    patient_id: str
    person_id: str
    based_on: str
    replaces: str
    created: dt.datetime | None
    updated: dt.datetime | None
    acknowledge_by: dt.datetime | None
    escalated: bool
    task: dict[str, Any]
    redirected_to: str = ""


@dataclass(frozen=True, slots=True)
class ReferralDetail:
    referral: ReferralSummary
    resources: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    allowed_actions: list[str] = field(default_factory=list)
    pending_work: list[str] = field(default_factory=list)


def referral_to_proto(row: TaskRow) -> pb.Referral:
    return pb.Referral(
        id=row.task_id, version=row.version, status=row.status,
        business_status=row.business_status, direction=row.category, urgency=row.urgency,
        requester_site=row.requester_site, requester_user=row.requester_user,
        owner_site=row.owner_site, department=row.owner_department or "",
        patient_id=row.patient_id, person_id=row.person_id or "", based_on=row.based_on or "",
        replaces=row.replaces or "", created=timestamp(row.created_at),
        updated=timestamp(row.updated_at), acknowledge_by=timestamp(row.ack_due_at),
        escalated=row.escalated_at is not None,
        task_json=json.dumps(fhir.task_resource(row), ensure_ascii=False).encode(),
        redirected_to=str(row.attributes.get("redirect_task", "")))


def referral_from_proto(m: pb.Referral) -> ReferralSummary:
    return ReferralSummary(
        m.id, m.version, m.status, m.business_status, m.direction, m.urgency,
        m.requester_site, m.requester_user, m.owner_site, m.department, m.patient_id,
        m.person_id, m.based_on, m.replaces, from_timestamp(m.created),
        from_timestamp(m.updated), from_timestamp(m.acknowledge_by), m.escalated,
        json.loads(m.task_json or b"{}"), m.redirected_to)


def new_referral_to_proto(new: NewReferral, practitioner: tuple[str, str] | None = None
                          ) -> pb.CreateReferralRequest:
    reason = new.reason
    return pb.CreateReferralRequest(
        practitioner=_practitioner(practitioner), request_id=new.request_id or "",
        patient_id=new.patient_id, direction=new.direction, urgency=new.urgency,
        target_site=new.target_site or "", department=new.department or "",
        reason=pb.Coding(system=reason.get("system", ""), code=reason.get("code", ""),
                         display=reason.get("display", ""), text=reason.get("text", "")),
        notes=new.notes, consent=new.consent_method or "", based_on=new.based_on or "",
        discharge_summary=new.discharge_summary,
        follow_ups=[pb.FollowUp(days_from_now=d, what=w) for d, w in new.follow_ups])


def new_referral_from_proto(m: pb.CreateReferralRequest) -> NewReferral:
    reason = {k: getattr(m.reason, k) for k in ("system", "code", "display", "text")
              if getattr(m.reason, k)}
    return NewReferral(
        patient_id=m.patient_id, urgency=m.urgency or "routine",
        direction=m.direction or "upward", target_site=m.target_site or None,
        department=m.department or None, reason=reason, notes=m.notes,
        consent_method=m.consent or None, request_id=m.request_id or None,
        based_on=m.based_on or None, discharge_summary=m.discharge_summary,
        follow_ups=tuple((f.days_from_now, f.what) for f in m.follow_ups))


def details_to_proto(d: Details) -> dict[str, Any]:
    """The ActRequest fields for ``d`` (keyword arguments)."""
    return dict(
        note=d.note, appointment_start=timestamp(d.appointment_start),
        admission_note=d.admission_note, reason_code=d.reason_code,
        reason_text=d.reason_text, target_site=d.target_site, department=d.department,
        result_text=d.result_text, result_kind=d.result_kind,
        result_json=json.dumps(d.result_resource).encode() if d.result_resource else b"",
        visit_date=timestamp(d.visit_date))


def details_from_proto(m: pb.ActRequest) -> Details:
    result = None
    if m.result_json:
        try:
            result = json.loads(m.result_json)
        except ValueError:
            raise InvalidInput("result_json is not JSON") from None
        if not isinstance(result, dict):
            raise InvalidInput("result_json must be one FHIR resource (a JSON object)")
    return Details(
        note=m.note, appointment_start=from_timestamp(m.appointment_start),
        admission_note=m.admission_note, reason_code=m.reason_code, reason_text=m.reason_text,
        result_text=m.result_text, result_kind=m.result_kind or "consult-note",
        result_resource=result, visit_date=from_timestamp(m.visit_date),
        target_site=m.target_site, department=m.department)


def detail_to_proto(v: ReferralView) -> pb.ReferralDetail:
    return pb.ReferralDetail(
        referral=referral_to_proto(v.task),
        resources=[pb.NamedResource(name=n, json=json.dumps(r, ensure_ascii=False).encode())
                   for n, r in sorted(v.resources.items())],
        history=[pb.HistoryEvent(
            version=e.version, at=timestamp(e.at), action=e.action,
            from_state=f"{e.from_status}/{e.from_business}" if e.from_status else "",
            to_state=f"{e.to_status}/{e.to_business}", actor=e.actor, note=e.note or "")
            for e in v.history],
        deliveries=[pb.Delivery(item_id=d.item_id, site_id=d.site_id, kind=d.kind,
                                purpose=d.purpose, delivered=d.delivered_at is not None,
                                acknowledged=d.acked_at is not None, attempts=d.attempts)
                    for d in v.deliveries],
        allowed_actions=v.allowed, pending_work=v.pending)


def detail_from_proto(m: pb.ReferralDetail) -> ReferralDetail:
    return ReferralDetail(
        referral_from_proto(m.referral),
        {r.name: json.loads(r.json) for r in m.resources},
        [{"version": e.version, "at": from_timestamp(e.at), "action": e.action,
          "from": e.from_state, "to": e.to_state, "actor": e.actor, "note": e.note}
         for e in m.history],
        [{"item_id": d.item_id, "site": d.site_id, "kind": d.kind, "purpose": d.purpose,
          "delivered": d.delivered, "acknowledged": d.acknowledged, "attempts": d.attempts}
         for d in m.deliveries],
        list(m.allowed_actions), list(m.pending_work))


def _none(value: float | None) -> float:
    return -1.0 if value is None else value


def turnaround_to_proto(lines: list[Turnaround]) -> pb.TurnaroundReply:
    return pb.TurnaroundReply(lines=[pb.TurnaroundLine(
        site_id=t.site_id, department=t.department, referrals=t.tasks, open=t.open,
        acknowledged=t.acknowledged, completed=t.completed, closed_loop=t.closed_loop,
        escalated=t.escalated, overdue_open=t.overdue_open,
        ack_median_min=_none(t.ack_median_min), ack_p90_min=_none(t.ack_p90_min),
        complete_median_h=_none(t.complete_median_h), close_median_h=_none(t.close_median_h))
        for t in lines])


def turnaround_from_proto(m: pb.TurnaroundReply) -> list[Turnaround]:
    def opt(v: float) -> float | None:
        return None if v < 0 else v

    return [Turnaround(t.site_id, t.department, t.referrals, t.open, t.acknowledged,
                       t.completed, t.closed_loop, t.escalated, t.overdue_open,
                       opt(t.ack_median_min), opt(t.ack_p90_min), opt(t.complete_median_h),
                       opt(t.close_median_h)) for t in m.lines]


def alert_to_proto(n: NoticeRow) -> pb.Alert:
    return pb.Alert(referral_id=n.task_id, at=timestamp(n.at), audience=n.audience,
                    reason=n.reason)


def _practitioner(p: tuple[str, str] | None) -> pb.Practitioner | None:
    return None if not p else pb.Practitioner(user_id=p[0], role=p[1])
