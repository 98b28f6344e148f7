"""The Gateway gRPC servicer: thin methods that convert at the edge and delegate.

Who is calling comes from :data:`federation.rpc.guard.current_peer`, set by the call
guard from the client certificate; the guard also turns raised federation errors
into gRPC statuses, so methods here simply raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from federation._proto.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from federation.archive.read import patient_ref, read_patient_record
from federation.archive.store import ArchiveStore
from federation.archive.sync import FeedPuller
from federation.errors import InvalidInput, Unavailable
from federation.gateway.fanout import Requester
from federation.gateway.inbox import Inbox
from federation.gateway.registry import NodeRegistry, utcnow
from federation.gateway.search import FederatedSearch
from federation.identity.lookup import (
    DEFAULT_LIMIT,
    find_patients,
    logged,
    resolve,
)
from federation.identity.store import IdentityStore
from federation.rpc.guard import current_peer
from federation.rpc.wire import TIER_TO_PROTO, envelope_to_proto, query_from_proto, timestamp
from federation.store import GatewayStore

__all__ = ["GatewayServicer", "GATEWAY_POLICY"]

_NODE = frozenset({"node"})
_PEOPLE = frozenset({"operator"})
_NODE_OR_PEOPLE = _NODE | _PEOPLE
_PREFIX = "/federation.v1.Gateway/"

#: which certificate roles may call which method (default deny for anything missing)
GATEWAY_POLICY: dict[str, frozenset[str]] = {
    _PREFIX + "Register": _NODE,
    _PREFIX + "Heartbeat": _NODE,
    _PREFIX + "StreamInbox": _NODE,
    _PREFIX + "AckWorkItem": _NODE,
    _PREFIX + "SearchPatients": _PEOPLE,
    _PREFIX + "NotifyChanges": _NODE,
    _PREFIX + "ReadPatientRecord": _PEOPLE,
    _PREFIX + "ResolvePatient": _NODE_OR_PEOPLE,
    _PREFIX + "FindPatients": _NODE_OR_PEOPLE,
}

#: PdqQuery fields → EMPI input columns
_PDQ_FIELDS = ("name", "family_name", "given_name", "sex", "birth_date", "national_id",
               "phone", "address", "postcode")


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self, registry: NodeRegistry, inbox: Inbox, search: FederatedSearch, *, heartbeat_ms: int,
        puller: FeedPuller | None = None,
        archive: tuple[GatewayStore, ArchiveStore] | None = None,
        identity: IdentityStore | None = None,
    ) -> None:
        self._identity = identity
        self._puller = puller
        self._archive = archive
        self._registry = registry
        self._inbox = inbox
        self._search = search
        self._heartbeat_ms = heartbeat_ms

    async def Register(self, request: gateway_pb2.RegisterRequest, context: grpc.aio.ServicerContext):
        peer = current_peer.get()
        node = await self._registry.register(
            peer, endpoint=request.endpoint, software_version=request.software_version,
            capabilities=list(request.capabilities),
        )
        if self._puller is not None:  # it may have changed while the gateway was away
            self._puller.request(node.site_id)
        return gateway_pb2.RegisterResponse(
            site_id=node.site_id,
            tier=TIER_TO_PROTO[peer.tier or ""],
            heartbeat_interval_ms=self._heartbeat_ms,
            registrations=node.registrations,
            server_time=timestamp(utcnow()),
        )

    async def Heartbeat(self, request: gateway_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext):
        result = await self._registry.heartbeat(current_peer.get(), request.sequence)
        return gateway_pb2.HeartbeatResponse(
            heartbeat_interval_ms=self._heartbeat_ms,
            server_time=timestamp(utcnow()),
            reregister=result.reregister,
        )

    async def StreamInbox(
        self, request: gateway_pb2.StreamInboxRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.WorkItem]:
        site_id = current_peer.get().site_id or ""
        async for item in self._inbox.stream(site_id, request.after_sequence):
            yield gateway_pb2.WorkItem(
                item_id=item.item_id, sequence=item.seq, kind=item.kind,
                source_site=item.source_site or "", content_type=item.content_type,
                payload=item.payload, created=timestamp(item.created_at),
            )

    async def NotifyChanges(self, request: gateway_pb2.ChangesNotice,
                            context: grpc.aio.ServicerContext):
        site_id = current_peer.get().site_id or ""
        scheduled = self._puller.request(site_id) if self._puller is not None else False
        return gateway_pb2.ChangesNoticeAck(pull_scheduled=scheduled)

    async def ReadPatientRecord(self, request: gateway_pb2.ReadPatientRecordRequest,
                                context: grpc.aio.ServicerContext
                                ) -> AsyncIterator[common_pb2.FhirResource]:
        if self._archive is None:
            raise Unavailable("this gateway keeps no archive")
        peer = current_peer.get()
        store, archive = self._archive
        found = await read_patient_record(
            store, archive, Requester(peer.role, peer.name, peer.site_id),
            request.site_id, request.patient_id, request.purpose_of_use or "TREAT")
        for row in found:
            yield common_pb2.FhirResource(resource_type=row.resource_type, id=row.resource_id,
                                          site_id=row.site_id, json=row.body,
                                          version_id=str(row.seq))

    def _require_identity(self) -> tuple[IdentityStore, GatewayStore | None]:
        if self._identity is None:
            raise Unavailable("this gateway keeps no master patient index")
        return self._identity, (self._archive[0] if self._archive else None)

    async def ResolvePatient(self, request: gateway_pb2.PixQuery,
                             context: grpc.aio.ServicerContext) -> gateway_pb2.PixAnswer:
        identity, store = self._require_identity()
        peer = current_peer.get()
        requester = Requester(peer.role, peer.name, peer.site_id)
        async with logged(store, requester, "Gateway/ResolvePatient") as note:
            if not request.system or not request.value:
                raise InvalidInput("ResolvePatient needs both system and value")
            result = await asyncio.to_thread(resolve, identity, request.system, request.value,
                                             sites=list(request.target_sites) or None)
            note.patient_ref = patient_ref(result.source.site_id, result.source.record_id)
            note.records = len(result.records)
            return gateway_pb2.PixAnswer(person_id=result.person_id, records=[
                gateway_pb2.SiteRecord(site_id=r.site_id, record_id=r.record_id,
                                       local_id=r.local_id or "") for r in result.records])

    async def FindPatients(self, request: gateway_pb2.PdqQuery,
                           context: grpc.aio.ServicerContext) -> gateway_pb2.PdqAnswer:
        identity, store = self._require_identity()
        peer = current_peer.get()
        requester = Requester(peer.role, peer.name, peer.site_id)
        async with logged(store, requester, "Gateway/FindPatients") as note:
            query = {f: getattr(request, f) for f in _PDQ_FIELDS if getattr(request, f)}
            matches = await asyncio.to_thread(find_patients, identity, query,
                                              limit=request.limit or DEFAULT_LIMIT)
            note.records = len(matches)
            return gateway_pb2.PdqAnswer(matches=[
                gateway_pb2.PdqMatch(site_id=m.site_id, record_id=m.record_id,
                                     local_id=m.local_id or "", person_id=m.person_id or "",
                                     probability=m.probability) for m in matches])

    async def AckWorkItem(self, request: gateway_pb2.AckWorkItemRequest, context: grpc.aio.ServicerContext):
        row = await self._inbox.ack(current_peer.get().site_id or "", request.item_id)
        return gateway_pb2.AckWorkItemResponse(acked_at=timestamp(row.acked_at))

    async def SearchPatients(
        self, request: gateway_pb2.FederatedSearchRequest, context: grpc.aio.ServicerContext
    ):
        outcome = await self._search.search(
            current_peer.get(),
            query_from_proto(request.query),
            site_ids=list(request.site_ids),
            purpose=request.purpose_of_use or "TREAT",
            deadline_ms=request.deadline_ms,
        )
        return gateway_pb2.FederatedSearchResponse(
            correlation_id=outcome.correlation_id,
            results=[
                gateway_pb2.SiteResult(
                    site_id=r.site_id, truncated=r.truncated, elapsed_ms=r.elapsed_ms,
                    patients=[envelope_to_proto(p) for p in r.patients],
                )
                for r in outcome.results
            ],
            issues=[
                common_pb2.Issue(severity=i.severity, code=i.code, diagnostics=i.diagnostics,
                                 site_id=i.site_id)
                for i in outcome.issues
            ],
        )
