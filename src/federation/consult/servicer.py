"""The Consults gRPC servicer: thin methods that convert at the edge and delegate to
:class:`~federation.consult.service.ConsultService`. The caller is the certificate the
call guard read, plus the practitioner a node acts for (as for referrals)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc

from federation._proto.v1 import consult_pb2 as pb
from federation._proto.v1 import consult_pb2_grpc
from federation.consult.moves import Details
from federation.consult.service import ConsultService, NewConsult
from federation.consult.wire import consult_to_proto, detail_to_proto, encode_chunk
from federation.errors import InvalidInput
from federation.referral.servicer import staff_caller as _who
from federation.rpc.handlers import add_with_raw_replies
from federation.rpc.wire import from_timestamp

__all__ = ["ConsultsServicer", "CONSULT_POLICY", "SERVICE", "add_consults"]

_PREFIX = "/federation.v1.Consults/"
_STAFF = frozenset({"node", "person"})
_READERS = _STAFF | {"operator"}
SERVICE = pb.DESCRIPTOR.services_by_name["Consults"].full_name
MAX_PAGE = 200

#: which certificate roles may call which method (default deny for anything missing)
CONSULT_POLICY: dict[str, frozenset[str]] = {
    _PREFIX + "Request": _STAFF,
    _PREFIX + "Act": _STAFF,
    _PREFIX + "Report": _STAFF,
    _PREFIX + "Get": _READERS,
    _PREFIX + "Inbox": _READERS,
    _PREFIX + "FetchStudy": _STAFF,
}


class ConsultsServicer(consult_pb2_grpc.ConsultsServicer):
    def __init__(self, service: ConsultService) -> None:
        self._service = service

    async def Request(self, request: pb.ConsultRequest,
                      context: grpc.aio.ServicerContext) -> pb.ConsultReply:
        r = request.reason
        reason = {k: v for k, v in (("system", r.system), ("code", r.code),
                                    ("display", r.display), ("text", r.text)) if v}
        new = NewConsult(patient_id=request.patient_id, kind=request.kind,
                         question=request.question, mode=request.mode or "offline",
                         urgency=request.urgency or "routine", pool=request.pool or None,
                         reason=reason, study_ids=tuple(request.study_ids),
                         consent_method=request.consent or None,
                         request_id=request.request_id or None)
        row, created = await self._service.request(_who(request.practitioner), new)
        return pb.ConsultReply(consult=consult_to_proto(row), created=created)

    async def Act(self, request: pb.ConsultActRequest,
                  context: grpc.aio.ServicerContext) -> pb.ConsultReply:
        if not request.consult_id or not request.action:
            raise InvalidInput("Act needs consult_id and action")
        d = Details(note=request.note, to_user=request.to_user,
                    slot_start=from_timestamp(request.slot_start)
                    if request.HasField("slot_start") else None,
                    participants=tuple(request.participants))
        row = await self._service.act(_who(request.practitioner), request.consult_id,
                                      request.action, d,
                                      expected_version=request.expected_version or None)
        return pb.ConsultReply(consult=consult_to_proto(row))

    async def Report(self, request: pb.ConsultReportRequest,
                     context: grpc.aio.ServicerContext) -> pb.ConsultReply:
        if not request.consult_id or not request.report_json or not request.signature \
                or not request.signer_cert_pem:
            raise InvalidInput("Report needs consult_id, report_json, signature and "
                               "signer_cert_pem")
        try:
            report = json.loads(request.report_json)
        except ValueError:
            raise InvalidInput("report_json is not JSON") from None
        if not isinstance(report, dict):
            raise InvalidInput("report_json must be a FHIR DiagnosticReport object")
        row = await self._service.report(_who(request.practitioner), request.consult_id,
                                         report, request.signature, request.signer_cert_pem,
                                         amend=request.amend)
        return pb.ConsultReply(consult=consult_to_proto(row))

    async def Get(self, request: pb.GetConsultRequest,
                  context: grpc.aio.ServicerContext) -> pb.ConsultDetail:
        view = await self._service.read(_who(request.practitioner, reading=True),
                                        request.consult_id)
        return detail_to_proto(view)

    async def Inbox(self, request: pb.ConsultInboxRequest,
                    context: grpc.aio.ServicerContext) -> pb.ConsultInboxReply:
        limit = request.limit or 20
        if limit > MAX_PAGE:
            raise InvalidInput(f"limit must be at most {MAX_PAGE}")
        rows, total = await self._service.inbox(
            _who(request.practitioner, reading=True), statuses=tuple(request.status),
            mine=request.mine, offset=request.offset, limit=limit)
        return pb.ConsultInboxReply(consults=[consult_to_proto(r) for r in rows], total=total)

    async def FetchStudy(self, request: pb.FetchStudyRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        if not request.consult_id or not request.study_id or not request.object:
            raise InvalidInput("FetchStudy needs consult_id, study_id and object")
        async for c in self._service.fetch_study(_who(request.practitioner),
                                                 request.consult_id, request.study_id,
                                                 request.object, request.offset):
            yield encode_chunk(c)     # the node's message as it came, checked


def add_consults(servicer: ConsultsServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer``; ``FetchStudy`` replies leave as the bytes it yields."""
    add_with_raw_replies(consult_pb2_grpc.add_ConsultsServicer_to_server, servicer, server,
                         ("FetchStudy",))
