"""The NodeAgent gRPC server: thin servicer methods over :class:`NodeService`.

Only the gateway may call a node (policy table below, enforced by the call guard from
the caller's certificate). Source access is blocking I/O, so it runs in worker threads.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from federation import __version__
from federation._proto.v1 import node_agent_pb2, node_agent_pb2_grpc
from federation.consult.node import STUDY_SOURCE_POLICY, StudySourceServicer, add_study_source
from federation.consult.studies import StudyFolder
from federation.envelope import Envelope
from federation.errors import Unavailable
from federation.nodes.feed import ChangeFeed
from federation.nodes.service import RESOURCE_TYPES, NodeService
from federation.rpc.channels import server_options
from federation.rpc.guard import CallGuard
from federation.rpc.wire import TIER_TO_PROTO, envelope_to_proto, query_from_proto, timestamp
from federation.security.identity import RevocationList
from federation.security.rotation import TlsFiles, reloading_server_credentials

__all__ = ["NodeAgentServicer", "NODE_POLICY", "create_node_server", "mark_serving"]

_PREFIX = "/federation.v1.NodeAgent/"
_GATEWAY = frozenset({"gateway"})
NODE_POLICY: dict[str, frozenset[str]] = {
    _PREFIX + "GetCapabilities": _GATEWAY,
    _PREFIX + "SearchPatients": _GATEWAY,
    _PREFIX + "FetchPatientResources": _GATEWAY,
    _PREFIX + "FetchPatientResourceBatches": _GATEWAY,
    _PREFIX + "GetQualityReport": _GATEWAY,
    _PREFIX + "StreamChanges": _GATEWAY,
}
#: changes per ChangeBatch unless the gateway asks for fewer; and the most it may ask for
DEFAULT_BATCH, MAX_BATCH = 500, 5000
SERVICE = node_agent_pb2.DESCRIPTOR.services_by_name["NodeAgent"].full_name
#: resources read from the source per worker-thread hop while streaming a record
_FETCH_BATCH = 64
T = TypeVar("T")


class NodeAgentServicer(node_agent_pb2_grpc.NodeAgentServicer):
    def __init__(self, service: NodeService, feed: ChangeFeed | None = None, *,
                 max_message_bytes: int = 4 * 1024 * 1024) -> None:
        self._service = service
        self._feed = feed
        # a batch (JSON plus framing) must fit the gateway's message limit
        self._batch_bytes = max(64 * 1024, max_message_bytes // 2)

    async def GetCapabilities(self, request, context: grpc.aio.ServicerContext):
        count = await asyncio.to_thread(self._service.patient_count)
        return node_agent_pb2.Capabilities(
            site_id=self._service.site_id,
            tier=TIER_TO_PROTO[self._service.tier],
            software_version=__version__,
            adapter=self._service.adapter_kind,
            resource_types=list(RESOURCE_TYPES),
            patient_count=count,
            quarantined_records=len(self._service.quarantined()),
        )

    async def SearchPatients(self, request, context: grpc.aio.ServicerContext):
        query = query_from_proto(request.query)
        found, truncated = await asyncio.to_thread(self._service.search, query)
        return node_agent_pb2.SearchPatientsResponse(
            patients=[envelope_to_proto(e) for e in found], truncated=truncated)

    async def FetchPatientResources(
        self, request, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[object]:
        # the source is read lazily in a thread, a few dozen resources at a time, so a
        # large record is never held whole in memory (nor one thread hop paid per resource)
        async for batch in self._record(request):
            for env in batch:
                yield envelope_to_proto(env)

    async def FetchPatientResourceBatches(
        self, request, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[object]:
        """The same record, each worker-thread hop's resources in one message (split
        where a message would pass half the gateway's limit)."""
        async for batch in self._record(request):
            for part in _within(batch, self._batch_bytes):
                yield node_agent_pb2.FhirResourceBatch(
                    resources=[envelope_to_proto(env) for env in part])

    async def _record(self, request) -> AsyncIterator[list[Envelope]]:
        iterator = self._service.fetch(request.patient_id, list(request.resource_types))
        while batch := await asyncio.to_thread(_take, iterator, _FETCH_BATCH):
            yield batch

    async def GetQualityReport(self, request, context: grpc.aio.ServicerContext):
        report = await asyncio.to_thread(self._service.quality_report, refresh=request.refresh)
        reply = node_agent_pb2.QualityReport(
            site_id=report.site_id, scan_ms=report.scan_ms,
            mapped=[node_agent_pb2.ResourceCount(resource_type=t, count=n)
                    for t, n in sorted(report.mapped.items())],
            quarantined=[node_agent_pb2.QuarantinedRecord(kind=e.kind, local_key=e.local_key,
                                                          reason=e.reason)
                         for e in report.quarantined],
            unmapped=[node_agent_pb2.UnmappedCode(kind=u.kind, code=u.code, count=n)
                      for u, n in sorted(report.unmapped.items(),
                                         key=lambda i: (i[0].kind, i[0].code))],
        )
        reply.generated_at.CopyFrom(timestamp(report.generated_at))
        return reply

    async def StreamChanges(self, request, context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[object]:
        """The feed after the gateway's cursor, up to the head at the time of the call.
        Each batch is read only once the previous one was taken (an async generator
        advances when gRPC's flow control lets the message out)."""
        feed = self._feed
        if feed is None:
            raise Unavailable(f"node {self._service.site_id} keeps no change feed")
        head = await asyncio.to_thread(feed.head)
        after = request.after
        reset = request.epoch != feed.epoch or after > head
        if reset:
            after = 0
        limit = min(request.max_batch or DEFAULT_BATCH, MAX_BATCH)
        sent = False
        while after < head:
            changes = [c for c in await asyncio.to_thread(
                feed.changes, after, limit=limit, max_bytes=self._batch_bytes) if c.seq <= head]
            if not changes:
                break
            yield node_agent_pb2.ChangeBatch(
                epoch=feed.epoch, reset=reset and not sent, head=head,
                changes=[node_agent_pb2.Change(seq=c.seq, resource_type=c.resource_type,
                                               resource_id=c.resource_id, deleted=c.deleted,
                                               json=c.body) for c in changes])
            sent = True
            after = changes[-1].seq
        if not sent:  # nothing new: one empty batch still tells the epoch and the head
            yield node_agent_pb2.ChangeBatch(epoch=feed.epoch, reset=reset, head=head)


def create_node_server(
    service: NodeService,
    tls: TlsFiles,
    listen: str,
    *,
    max_message_bytes: int,
    revocations: RevocationList | None = None,
    feed: ChangeFeed | None = None,
    studies: StudyFolder | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    server = grpc.aio.server(
        interceptors=[CallGuard("node", NODE_POLICY | STUDY_SOURCE_POLICY, revocations)],
        options=server_options(max_message_bytes),
    )
    node_agent_pb2_grpc.add_NodeAgentServicer_to_server(
        NodeAgentServicer(service, feed, max_message_bytes=max_message_bytes), server)
    add_study_source(StudySourceServicer(studies, service.site_id), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_secure_port(listen, reloading_server_credentials(tls))
    except RuntimeError:
        raise Unavailable(f"cannot listen for gRPC on {listen}: address already in use or "
                          "not available") from None
    return server, port, health_servicer


async def mark_serving(health_servicer: health.aio.HealthServicer) -> None:
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def _take(iterator: Iterator[T], n: int) -> list[T]:
    return list(itertools.islice(iterator, n))


#: what a resource adds to a message besides its JSON (ids, type, site, timestamp, tags)
_FRAMING = 256


def _within(envelopes: list[Envelope], budget: int) -> Iterator[list[Envelope]]:
    """``envelopes`` in order, cut into runs whose JSON stays within ``budget`` bytes (a
    resource larger than the budget alone)."""
    part: list[Envelope] = []
    size = 0
    for env in envelopes:
        cost = len(env.json) + _FRAMING
        if part and size + cost > budget:
            yield part
            part, size = [], 0
        part.append(env)
        size += cost
    if part:
        yield part
