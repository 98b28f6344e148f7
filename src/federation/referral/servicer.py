"""The Referrals gRPC servicer: thin methods that convert at the edge and delegate to
:class:`~federation.referral.service.ReferralService`.

The caller is the certificate the call guard read (``current_peer``) plus, for a node,
the practitioner it acts for; :func:`~federation.security.principal.principal_of` turns
them into the principal the state machine checks.
"""

from __future__ import annotations

import grpc

from federation._proto.v1 import referral_pb2 as pb
from federation._proto.v1 import referral_pb2_grpc
from federation.errors import InvalidInput
from federation.referral.service import ReferralService
from federation.referral.wire import (
    alert_to_proto,
    detail_to_proto,
    details_from_proto,
    new_referral_from_proto,
    referral_to_proto,
    turnaround_to_proto,
)
from federation.rpc.guard import current_peer
from federation.rpc.wire import from_timestamp
from federation.security.principal import Principal, principal_of
from federation.workflow.records import TaskFilter

__all__ = ["ReferralsServicer", "REFERRALS_POLICY", "SERVICE", "staff_caller"]

_PREFIX = "/federation.v1.Referrals/"
_STAFF = frozenset({"node", "person"})
_READERS = _STAFF | {"operator"}
SERVICE = pb.DESCRIPTOR.services_by_name["Referrals"].full_name
MAX_PAGE = 200

#: which certificate roles may call which method (default deny for anything missing)
REFERRALS_POLICY: dict[str, frozenset[str]] = {
    _PREFIX + "Create": _STAFF,
    _PREFIX + "Act": _STAFF,
    _PREFIX + "Get": _READERS,
    _PREFIX + "Search": _READERS,
    _PREFIX + "Turnaround": _READERS,
    _PREFIX + "Alerts": _READERS,
}


def staff_caller(practitioner: pb.Practitioner, *, reading: bool = False) -> Principal:
    """The principal of a workflow call (referral, consult): the certificate's holder, or
    the practitioner a node acts for; a node reading its own site's tasks needs none."""
    peer = current_peer.get()
    acting = (practitioner.user_id, practitioner.role) if practitioner.user_id else None
    if reading and peer.role == "node" and acting is None:
        # a node reading its own site's referrals needs no practitioner
        return Principal("node", peer.name, peer.site_id)
    return principal_of(peer, acting)


_who = staff_caller


class ReferralsServicer(referral_pb2_grpc.ReferralsServicer):
    def __init__(self, service: ReferralService) -> None:
        self._service = service

    async def Create(self, request: pb.CreateReferralRequest,
                     context: grpc.aio.ServicerContext) -> pb.ReferralReply:
        row, created = await self._service.create(_who(request.practitioner),
                                                  new_referral_from_proto(request))
        return pb.ReferralReply(referral=referral_to_proto(row), created=created)

    async def Act(self, request: pb.ActRequest,
                  context: grpc.aio.ServicerContext) -> pb.ReferralReply:
        if not request.referral_id or not request.action:
            raise InvalidInput("Act needs referral_id and action")
        row = await self._service.act(
            _who(request.practitioner), request.referral_id, request.action,
            details_from_proto(request), expected_version=request.expected_version or None)
        return pb.ReferralReply(referral=referral_to_proto(row))

    async def Get(self, request: pb.GetReferralRequest,
                  context: grpc.aio.ServicerContext) -> pb.ReferralDetail:
        view = await self._service.view(_who(request.practitioner, reading=True),
                                        request.referral_id)
        return detail_to_proto(view)

    async def Search(self, request: pb.SearchReferralsRequest,
                     context: grpc.aio.ServicerContext) -> pb.SearchReferralsReply:
        limit = request.limit or 20
        if limit > MAX_PAGE:
            raise InvalidInput(f"limit must be at most {MAX_PAGE}")
        where = TaskFilter(
            statuses=tuple(request.status), business_statuses=tuple(request.business_status),
            owner_sites=(request.owner_site,) if request.owner_site else (),
            requester_sites=(request.requester_site,) if request.requester_site else (),
            person_ids=(request.person_id,) if request.person_id else (),
            categories=(request.direction,) if request.direction else (),
            escalated=True if request.escalated_only else None)
        rows, total = await self._service.search(_who(request.practitioner, reading=True),
                                                 where, offset=request.offset, limit=limit)
        return pb.SearchReferralsReply(referrals=[referral_to_proto(r) for r in rows],
                                       total=total)

    async def Turnaround(self, request: pb.TurnaroundRequest,
                         context: grpc.aio.ServicerContext) -> pb.TurnaroundReply:
        return turnaround_to_proto(await self._service.turnaround(from_timestamp(request.since)))

    async def Alerts(self, request: pb.AlertsRequest,
                     context: grpc.aio.ServicerContext) -> pb.AlertsReply:
        notices = await self._service.alerts(_who(request.practitioner, reading=True),
                                             limit=min(request.limit or 100, 1000))
        return pb.AlertsReply(alerts=[alert_to_proto(n) for n in notices])
