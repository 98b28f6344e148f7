"""Consults at the protobuf edge: study manifests, consult summaries and details convert
here, so that neither the service nor the domain sees a ``_pb2``.

Study chunks are the one message written and read by hand (:func:`encode_chunk`,
:func:`decode_chunk`): a ``StudyChunk`` carries a MiB of data, and going through the
protobuf classes costs a copy of it each way (into the message and out of it) at every
hop. Here the node writes the message once, the gateway reads the few header bytes,
checks the data where it lies (a ``memoryview``) and forwards the same bytes, and the
client hashes and writes that view (bench/consult_stream.py). The bytes are the standard
protobuf encoding of ``StudyChunk``: any protobuf library reads them, and these read
any protobuf library's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from federation._proto.v1 import consult_pb2
from federation.consult import fhir
from federation.consult.moves import payload
from federation.consult.studies import Chunk, StudyManifest, StudyObject
from federation.errors import IntegrityError
from federation.rpc.wire import timestamp
from federation.workflow.records import TaskRow

if TYPE_CHECKING:
    from federation.consult.service import ConsultView

__all__ = ["encode_chunk", "decode_chunk", "manifest_from_proto", "manifest_to_proto", "consult_to_proto", "consult_from_proto",
           "detail_to_proto", "detail_from_proto", "ConsultSummary", "ConsultDetail"]


# StudyChunk: offset = 1 (uint64), data = 2 (bytes), sha256 = 3 (string), index = 4 (uint32)
_OFFSET, _DATA, _SHA256, _INDEX = 0x08, 0x12, 0x1A, 0x20


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_chunk(chunk: Chunk) -> bytes:
    """``chunk`` as a serialized ``StudyChunk``, data last: one copy of the data (the
    message as received, ``chunk.wire``, is returned as it is)."""
    if chunk.wire is not None:
        return chunk.wire
    head = bytearray()
    if chunk.offset:
        head += bytes((_OFFSET,)) + _varint(chunk.offset)
    if chunk.sha256:
        sha = chunk.sha256.encode()
        head += bytes((_SHA256,)) + _varint(len(sha)) + sha
    if chunk.index:
        head += bytes((_INDEX,)) + _varint(chunk.index)
    if not len(chunk.data):
        return bytes(head)
    head += bytes((_DATA,)) + _varint(len(chunk.data))
    return b"".join((head, chunk.data))


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(raw) or shift > 63:
            raise ValueError("truncated varint")
        b = raw[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def decode_chunk(raw: bytes, where: str = "the study stream") -> Chunk:
    """A serialized ``StudyChunk`` as a :class:`Chunk` whose data is a view into ``raw``
    (no copy). Read as protobuf does: fields in any order, the last of a repeated field
    wins, unknown fields skipped. Only a message holding exactly the known fields once
    keeps ``raw`` as its ``wire`` (to be forwarded unchanged); anything else is
    re-encoded from what was read, so nothing unread passes on. Malformed bytes raise
    :class:`IntegrityError`."""
    view = memoryview(raw)
    offset = index = 0
    sha256, data = "", view[0:0]
    seen: set[int] = set()
    canonical, pos, end = True, 0, len(raw)
    try:
        while pos < end:
            key, pos = _read_varint(raw, pos)
            kind = key & 7
            if kind == 0:
                value, pos = _read_varint(raw, pos)
            elif kind == 2:
                size, pos = _read_varint(raw, pos)
                if pos + size > end:
                    raise ValueError("a field runs past the end")
                field_view, pos = view[pos:pos + size], pos + size
            elif kind in (1, 5):
                pos += 8 if kind == 1 else 4
                if pos > end:
                    raise ValueError("a field runs past the end")
            else:
                raise ValueError(f"wire type {kind}")
            canonical = canonical and key not in seen
            seen.add(key)
            if key == _OFFSET:
                offset = value & 0xFFFF_FFFF_FFFF_FFFF
            elif key == _DATA:
                data = field_view
            elif key == _SHA256:
                sha256 = str(field_view, "utf-8")
            elif key == _INDEX:
                index = value & 0xFFFF_FFFF
            else:
                canonical = False
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{where}: a malformed study chunk ({exc}); fetch again") from None
    return Chunk(offset, data, sha256, index, raw if canonical else None)


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
