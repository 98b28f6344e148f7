"""Consults at the protobuf edge: study manifests, consult summaries and details convert
here, so that neither the service nor the domain sees a ``_pb2``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from federation._proto.v1 import consult_pb2
from federation.consult import fhir
from federation.consult.moves import payload
from federation.consult.studies import StudyManifest, StudyObject
from federation.rpc.wire import timestamp
from federation.workflow.records import TaskRow

if TYPE_CHECKING:
    from federation.consult.service import ConsultView

__all__ = ["manifest_from_proto", "manifest_to_proto", "consult_to_proto", "consult_from_proto",
           "detail_to_proto", "detail_from_proto", "ConsultSummary", "ConsultDetail"]


def manifest_from_proto(m: consult_pb2.StudyManifest) -> StudyManifest:
    return StudyManifest(m.study_id, m.kind, m.description, tuple(
        StudyObject(o.name, o.size, o.sha256, o.content_type, o.chunk_size,
                    tuple(o.chunk_sha256)) for o in m.objects))


def manifest_to_proto(m: StudyManifest) -> consult_pb2.StudyManifest:
    return consult_pb2.StudyManifest(
        study_id=m.study_id, kind=m.kind, description=m.description,
        objects=[consult_pb2.StudyObject(name=o.name, size=o.size, sha256=o.sha256,
                                         content_type=o.content_type, chunk_size=o.chunk_size,
                                         chunk_sha256=list(o.chunks)) for o in m.objects])


def consult_to_proto(row: TaskRow) -> consult_pb2.Consult:
    msg = consult_pb2.Consult(
        id=row.task_id, version=row.version, status=row.status,
        business_status=row.business_status, kind=row.category,
        mode=str(row.attributes.get("mode", "")), urgency=row.urgency,
        requester_site=row.requester_site, requester_user=row.requester_user,
        hub_site=row.owner_site, pool=row.owner_department or "", assignee=row.assignee or "",
        patient_id=row.patient_id, person_id=row.person_id or "",
        escalated=row.escalated_at is not None,
        task_json=payload(fhir.task_resource(row)))
    msg.created.CopyFrom(timestamp(row.created_at))
    msg.updated.CopyFrom(timestamp(row.updated_at))
    if row.ack_due_at is not None:
        msg.claim_by.CopyFrom(timestamp(row.ack_due_at))
    return msg


@dataclass(frozen=True, slots=True)
class ConsultSummary:
    """A consult as a client sees it."""

    id: str
    version: int
    status: str
    business_status: str
    kind: str
    mode: str
    urgency: str
    requester_site: str
    requester_user: str
    hub_site: str
    pool: str
    assignee: str
    patient_id: str
    person_id: str
    escalated: bool
    task: dict[str, Any]


def consult_from_proto(m: consult_pb2.Consult) -> ConsultSummary:
    return ConsultSummary(m.id, m.version, m.status, m.business_status, m.kind, m.mode,
                          m.urgency, m.requester_site, m.requester_user, m.hub_site, m.pool,
                          m.assignee, m.patient_id, m.person_id, m.escalated,
                          json.loads(m.task_json or b"{}"))


@dataclass(frozen=True, slots=True)
class ConsultDetail:
    consult: ConsultSummary
    resources: dict[str, Any]
    history: list[dict[str, Any]]
    allowed: list[str]
    studies: list[StudyManifest]


def detail_to_proto(view: ConsultView) -> consult_pb2.ConsultDetail:
    history = [{"version": e.version, "at": e.at.isoformat(), "action": e.action,
                "from": f"{e.from_status}/{e.from_business}" if e.from_status else None,
                "to": f"{e.to_status}/{e.to_business}", "actor": e.actor,
                "actor_site": e.actor_site, "note": e.note, "detail": dict(e.detail)}
               for e in view.history]
    return consult_pb2.ConsultDetail(
        consult=consult_to_proto(view.task), resources_json=payload(view.resources),
        history_json=json.dumps(history, ensure_ascii=False).encode(),
        allowed=view.allowed, studies=[manifest_to_proto(m) for m in view.studies])


def detail_from_proto(m: consult_pb2.ConsultDetail) -> ConsultDetail:
    return ConsultDetail(consult_from_proto(m.consult), json.loads(m.resources_json or b"{}"),
                         json.loads(m.history_json or b"[]"), list(m.allowed),
                         [manifest_from_proto(s) for s in m.studies])
