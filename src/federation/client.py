"""A client for people's tools (the CLI, the demo tour) calling the gateway over mTLS.

It presents an operator certificate; the gateway's answers come back as domain
records (FHIR JSON already validated by the gateway), failures as federation errors.
"""

from __future__ import annotations

from types import TracebackType

import grpc

from federation._proto.v1 import gateway_pb2, gateway_pb2_grpc
from federation.envelope import Envelope
from federation.gateway.fanout import SiteIssue
from federation.gateway.search import SearchOutcome, SiteHits
from federation.nodes.model import PatientQuery
from federation.rpc.channels import secure_channel
from federation.rpc.status import error_from_rpc
from federation.rpc.wire import envelope_from_proto, query_to_proto
from federation.security.ca import GATEWAY_SERVER_NAME
from federation.security.tls import TlsMaterial

__all__ = ["GatewayClient"]


class GatewayClient:
    def __init__(self, address: str, tls: TlsMaterial, *, max_message_bytes: int = 16 << 20) -> None:
        self._address = address
        self._channel = secure_channel(address, tls, max_message_bytes, server_name=GATEWAY_SERVER_NAME)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)

    async def search(
        self,
        query: PatientQuery,
        *,
        site_ids: list[str] | None = None,
        purpose: str = "TREAT",
        deadline_ms: int = 0,
        timeout: float = 30.0,
    ) -> SearchOutcome:
        """The gateway's answer in the same records its own search produces."""
        request = gateway_pb2.FederatedSearchRequest(
            query=query_to_proto(query), site_ids=site_ids or [], purpose_of_use=purpose,
            deadline_ms=deadline_ms,
        )
        try:
            reply = await self._stub.SearchPatients(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, f"gateway {self._address}") from None
        return SearchOutcome(
            correlation_id=reply.correlation_id,
            results=[
                SiteHits(r.site_id, [envelope_from_proto(p) for p in r.patients], r.truncated,
                         r.elapsed_ms)
                for r in reply.results
            ],
            issues=[SiteIssue(i.severity, i.code, i.diagnostics, i.site_id) for i in reply.issues],
        )

    async def read_patient_record(self, site_id: str, patient_id: str, *,
                                  purpose: str = "TREAT", timeout: float = 30.0
                                  ) -> list[Envelope]:
        """One site patient's resources as the gateway's archive holds them."""
        request = gateway_pb2.ReadPatientRecordRequest(site_id=site_id, patient_id=patient_id,
                                                       purpose_of_use=purpose)
        try:
            return [envelope_from_proto(m) async for m in
                    self._stub.ReadPatientRecord(request, timeout=timeout)]
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, f"gateway {self._address}") from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
