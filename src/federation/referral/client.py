"""A client of the gateway's Referrals service for staff tools (the CLI, the demo tour).

It presents a person certificate (or, for a node's own software, the node certificate
plus ``practitioner``); answers come back as the referral's domain records and failures
as federation errors.
"""

from __future__ import annotations

import datetime as dt
from types import TracebackType
from typing import Any

import grpc

from federation._proto.v1 import referral_pb2 as pb
from federation._proto.v1 import referral_pb2_grpc
from federation.referral.moves import Details
from federation.referral.service import NewReferral
from federation.referral.wire import (
    ReferralDetail,
    ReferralSummary,
    detail_from_proto,
    details_to_proto,
    new_referral_to_proto,
    referral_from_proto,
    turnaround_from_proto,
)
from federation.rpc.channels import secure_channel
from federation.rpc.status import error_from_rpc
from federation.rpc.wire import from_timestamp, timestamp
from federation.security.ca import GATEWAY_SERVER_NAME
from federation.security.tls import TlsMaterial
from federation.workflow.turnaround import Turnaround

__all__ = ["ReferralClient"]


class ReferralClient:
    def __init__(self, address: str, tls: TlsMaterial, *,
                 practitioner: tuple[str, str] | None = None, timeout: float = 30.0) -> None:
        self._address = address
        self._channel = secure_channel(address, tls, 16 << 20, server_name=GATEWAY_SERVER_NAME)
        self._stub = referral_pb2_grpc.ReferralsStub(self._channel)
        self._practitioner = (pb.Practitioner(user_id=practitioner[0], role=practitioner[1])
                              if practitioner else None)
        self._timeout = timeout

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, f"gateway {self._address}") from None

    async def create(self, new: NewReferral) -> tuple[ReferralSummary, bool]:
        request = new_referral_to_proto(new)
        if self._practitioner is not None:
            request.practitioner.CopyFrom(self._practitioner)
        reply = await self._call("Create", request)
        return referral_from_proto(reply.referral), reply.created

    async def act(self, referral_id: str, action: str, details: Details | None = None, *,
                  expected_version: int | None = None) -> ReferralSummary:
        request = pb.ActRequest(practitioner=self._practitioner, referral_id=referral_id,
                                action=action, expected_version=expected_version or 0,
                                **details_to_proto(details or Details()))
        return referral_from_proto((await self._call("Act", request)).referral)

    async def get(self, referral_id: str) -> ReferralDetail:
        reply = await self._call("Get", pb.GetReferralRequest(
            practitioner=self._practitioner, referral_id=referral_id))
        return detail_from_proto(reply)

    async def search(self, *, status: list[str] | None = None, owner_site: str = "",
                     requester_site: str = "", person_id: str = "", direction: str = "",
                     escalated_only: bool = False, offset: int = 0, limit: int = 20
                     ) -> tuple[list[ReferralSummary], int]:
        reply = await self._call("Search", pb.SearchReferralsRequest(
            practitioner=self._practitioner, status=status or [], owner_site=owner_site,
            requester_site=requester_site, person_id=person_id, direction=direction,
            escalated_only=escalated_only, offset=offset, limit=limit))
        return [referral_from_proto(r) for r in reply.referrals], reply.total

    async def turnaround(self, since: dt.datetime | None = None) -> list[Turnaround]:
        return turnaround_from_proto(await self._call(
            "Turnaround", pb.TurnaroundRequest(since=timestamp(since))))

    async def alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        reply = await self._call("Alerts", pb.AlertsRequest(practitioner=self._practitioner,
                                                            limit=limit))
        return [{"referral": a.referral_id, "at": from_timestamp(a.at), "audience": a.audience,
                 "reason": a.reason} for a in reply.alerts]

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> ReferralClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
