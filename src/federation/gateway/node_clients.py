"""The gateway's clients to node agents: one mTLS channel per node, responses checked.

The gateway dials a node at the endpoint it registered, and checks the node's server
certificate against the consortium CA *and* against the site it expects: node
certificates carry ``<site>.nodes.federation.internal`` as a DNS name, which the
gateway uses as the TLS target name, so a node cannot answer for another site.
Everything a node returns is validated as FHIR before anyone else sees it. Given the
gateway's :class:`TlsFiles`, each channel follows the gateway's certificate on disk: after
a rotation, new calls to the nodes present the new certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from federation._proto.v1 import node_agent_pb2, node_agent_pb2_grpc
from federation.envelope import Envelope, validate_resource
from federation.errors import DeadlineExceeded, InvalidInput
from federation.nodes.coding import Unmapped
from federation.nodes.model import PatientQuery
from federation.nodes.quality import QualityReport, QuarantineEntry
from federation.rpc.channels import secure_channel
from federation.rpc.status import error_from_rpc
from federation.rpc.wire import TIER_FROM_PROTO, envelope_from_proto, from_timestamp, query_to_proto
from federation.security.ca import node_server_name
from federation.security.rotation import TlsFiles
from federation.security.tls import TlsMaterial

__all__ = ["NodeClients", "NodeSearchResult", "NodeCapabilities"]

log = logging.getLogger("federation.gateway.nodes")

#: how long a node that lacks the batched record stream is read one resource a message
_ASK_AGAIN_S = 600.0


@dataclass(frozen=True, slots=True)
class NodeCapabilities:
    site_id: str
    tier: str
    software_version: str
    adapter: str
    resource_types: tuple[str, ...]
    patient_count: int
    quarantined_records: int


@dataclass(frozen=True, slots=True)
class NodeSearchResult:
    site_id: str
    patients: list[Envelope]
    truncated: bool


class NodeClients:
    def __init__(self, tls: TlsFiles | TlsMaterial, max_message_bytes: int) -> None:
        self._tls = tls
        #: (site, endpoint) of nodes without FetchPatientResourceBatches → when to ask again
        self._unbatched: dict[tuple[str, str], float] = {}
        self._max = max_message_bytes
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}

    def _stub(self, site_id: str, endpoint: str) -> node_agent_pb2_grpc.NodeAgentStub:
        return node_agent_pb2_grpc.NodeAgentStub(self.channel(site_id, endpoint))

    def channel(self, site_id: str, endpoint: str) -> grpc.aio.Channel:
        """The one mTLS channel to ``site_id``'s node (for other services it serves)."""
        key = (site_id, endpoint)
        channel = self._channels.get(key)
        if channel is None:
            # a node that re-registers at a new endpoint gets a new channel; drop the old one
            for old in [k for k in self._channels if k[0] == site_id]:
                asyncio.ensure_future(self._channels.pop(old).close())
            channel = secure_channel(endpoint, self._tls, self._max,
                                     server_name=node_server_name(site_id))
            self._channels[key] = channel
        return channel

    async def _unary(self, site_id: str, endpoint: str, method: str, request: Any,
                     timeout: float) -> Any:
        """One unary NodeAgent call; gRPC failures become federation errors."""
        try:
            return await getattr(self._stub(site_id, endpoint), method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, site_id) from None

    async def capabilities(self, site_id: str, endpoint: str, *, timeout: float) -> NodeCapabilities:
        reply = await self._unary(site_id, endpoint, "GetCapabilities",
                                  node_agent_pb2.GetCapabilitiesRequest(), timeout)
        if reply.site_id != site_id:
            raise InvalidInput(f"node at {endpoint} says it is site {reply.site_id!r}, "
                               f"not {site_id!r}")
        return NodeCapabilities(
            site_id=reply.site_id, tier=TIER_FROM_PROTO.get(reply.tier, "unknown"),
            software_version=reply.software_version, adapter=reply.adapter,
            resource_types=tuple(reply.resource_types), patient_count=reply.patient_count,
            quarantined_records=reply.quarantined_records,
        )

    async def quality_report(self, site_id: str, endpoint: str, *, refresh: bool,
                             timeout: float) -> QualityReport:
        reply = await self._unary(site_id, endpoint, "GetQualityReport",
                                  node_agent_pb2.GetQualityReportRequest(refresh=refresh), timeout)
        if reply.site_id != site_id:
            raise InvalidInput(f"node at {endpoint} reported for site {reply.site_id!r}")
        return QualityReport(
            site_id=reply.site_id,
            generated_at=from_timestamp(reply.generated_at) or dt.datetime.now(dt.UTC),
            mapped={c.resource_type: c.count for c in reply.mapped},
            quarantined=tuple(QuarantineEntry(q.kind, q.local_key, q.reason)
                              for q in reply.quarantined),
            scan_ms=reply.scan_ms,
            unmapped={Unmapped(u.kind, u.code): u.count for u in reply.unmapped},
        )

    async def search(
        self,
        site_id: str,
        endpoint: str,
        query: PatientQuery,
        *,
        correlation_id: str,
        purpose: str,
        timeout: float,
    ) -> NodeSearchResult:
        request = node_agent_pb2.SearchPatientsRequest(
            query=query_to_proto(query), correlation_id=correlation_id, purpose_of_use=purpose
        )
        reply = await self._unary(site_id, endpoint, "SearchPatients", request, timeout)
        patients = [_checked(site_id, msg, "Patient") for msg in reply.patients]
        return NodeSearchResult(site_id, patients, reply.truncated)

    async def fetch(
        self,
        site_id: str,
        endpoint: str,
        patient_id: str,
        *,
        resource_types: list[str],
        correlation_id: str,
        purpose: str,
        timeout: float,
        validate: bool = True,
    ) -> AsyncIterator[Envelope]:
        """The patient's resources as the node streams them; each checked to come from
        ``site_id`` and of a known type; with ``validate`` re-validated against the FHIR R4
        models (the node did already; callers may skip it for speed, or validate
        themselves off the event loop)."""
        request = node_agent_pb2.FetchPatientResourcesRequest(
            patient_id=patient_id, resource_types=resource_types,
            correlation_id=correlation_id, purpose_of_use=purpose,
        )
        stub = self._stub(site_id, endpoint)
        deadline = time.monotonic() + timeout
        key = (site_id, endpoint)
        try:
            if time.monotonic() >= self._unbatched.get(key, 0.0):
                try:
                    async for batch in stub.FetchPatientResourceBatches(request, timeout=timeout):
                        for msg in batch.resources:
                            yield _checked(site_id, msg, None, validate=validate)
                    return
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                        raise
                # a node older than the batched call: one resource a message, asking
                # again after a while (the node may have been upgraded)
                self._unbatched[key] = time.monotonic() + _ASK_AGAIN_S
                log.info("node %s streams records one resource a message (an older node)",
                         site_id)
            async for msg in stub.FetchPatientResources(
                    request, timeout=max(0.0, deadline - time.monotonic())):
                yield _checked(site_id, msg, None, validate=validate)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, site_id) from None

    async def stream_changes(self, site_id: str, endpoint: str, *, epoch: str, after: int,
                             max_batch: int, timeout: float) -> AsyncIterator[Any]:
        """The node's change feed after ``after`` as ChangeBatch messages (checked by
        :mod:`federation.archive.sync`, which knows what each change must be)."""
        request = node_agent_pb2.StreamChangesRequest(epoch=epoch, after=after,
                                                      max_batch=max_batch)
        try:
            async for batch in self._stub(site_id, endpoint).StreamChanges(request,
                                                                           timeout=timeout):
                yield batch
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, site_id) from None

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


def _checked(site_id: str, msg: object, expected_type: str | None, *,
             validate: bool = True) -> Envelope:
    env = envelope_from_proto(msg)  # type: ignore[arg-type]
    if env.site_id != site_id:
        raise InvalidInput(f"node {site_id} returned {env.resource_type}/{env.id} labelled as "
                           f"site {env.site_id!r}")
    if expected_type and env.resource_type != expected_type:
        raise InvalidInput(f"node {site_id} returned a {env.resource_type} where a "
                           f"{expected_type} was expected")
    if validate:
        validate_resource(env)
    return env


def _translate(exc: grpc.aio.AioRpcError, site_id: str) -> Exception:
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"site {site_id} did not answer within the deadline")
    return error_from_rpc(exc, f"site {site_id}")
