"""The Archive gRPC service (``proto/federation/v1/archive.proto``) for nodes.

Thin: each method converts the request to a :class:`~federation.archive.access.Reader`
— the site from the caller's certificate (:data:`federation.rpc.guard.current_peer`),
the practitioner, purpose and reason from the request — and delegates to
:class:`~federation.archive.service.ArchiveService`. Who may call what is
:data:`ARCHIVE_POLICY` (merged into the gateway's call guard; default deny).
"""

from __future__ import annotations

import asyncio

import grpc
import orjson

from federation._proto.v1 import archive_pb2, archive_pb2_grpc, common_pb2
from federation.archive.access import Reader
from federation.archive.bundle import searchset
from federation.archive.search import run_search
from federation.archive.search_params import (
    DEFAULT_COUNT,
    MAX_COUNT,
    SearchQuery,
    parse_search,
)
from federation.archive.service import ArchiveService
from federation.archive.summary import document
from federation.errors import FederationError, InvalidInput
from federation.gateway.fanout import SiteIssue
from federation.rpc.guard import current_peer

__all__ = ["ARCHIVE_POLICY", "ArchiveServicer", "SERVICE_NAME"]

SERVICE_NAME = archive_pb2.DESCRIPTOR.services_by_name["Archive"].full_name
_PREFIX = f"/{SERVICE_NAME}/"
_NODE = frozenset({"node"})
#: which certificate roles may call which method (anything missing is refused)
ARCHIVE_POLICY: dict[str, frozenset[str]] = {
    _PREFIX + "Everything": _NODE,
    _PREFIX + "Search": _NODE,
    _PREFIX + "Summary": _NODE,
}
_BASE = "urn:federation:gateway/fhir"


def _reader(ctx: archive_pb2.ReadContext) -> Reader:
    peer = current_peer.get()
    who = ctx.practitioner_id.strip()[:100] or "(no practitioner)"
    return Reader(kind="node", id=f"{who}@{peer.site_id}", site_id=peer.site_id or "",
                  purpose=ctx.purpose_of_use or None, reason=ctx.reason or None)


def _reply(bundle: dict, issues: list[SiteIssue]) -> archive_pb2.BundleReply:
    return archive_pb2.BundleReply(
        bundle=orjson.dumps(bundle), total=bundle.get("total", 0),
        issues=[common_pb2.Issue(severity=i.severity, code=i.code, diagnostics=i.diagnostics,
                                 site_id=i.site_id) for i in issues])


class ArchiveServicer(archive_pb2_grpc.ArchiveServicer):
    def __init__(self, service: ArchiveService) -> None:
        self._service = service

    async def _checked(self, ctx: archive_pb2.ReadContext, operation: str,
                       resource_type: str | None = None,
                       parameters: list[tuple[str, str]] | None = None
                       ) -> tuple[Reader, SearchQuery | None]:
        """The reader (and the parsed search); a malformed request is logged, then refused."""
        reader = _reader(ctx)
        try:
            if not ctx.practitioner_id.strip():
                raise InvalidInput("context.practitioner_id is required: the archive logs "
                                   "who reads")
            query = parse_search(resource_type, parameters or []) if resource_type else None
        except FederationError as exc:
            await self._service.rejected(reader, operation, exc)
            raise
        return reader, query

    async def Everything(self, request: archive_pb2.EverythingRequest,
                         context: grpc.aio.ServicerContext) -> archive_pb2.BundleReply:
        reader, _ = await self._checked(request.context, "Archive/$everything")
        count = request.count or DEFAULT_COUNT * 2
        if count > MAX_COUNT * 10:
            raise InvalidInput(f"count must be at most {MAX_COUNT * 10}")
        record = await self._service.read(reader, request.patient_id,
                                          operation="Archive/$everything",
                                          types=set(request.types) or None, lazy=True)
        await self._service.gatherer.fill(
            record.resources[request.offset:request.offset + count])
        bundle = searchset(record.resources, base=f"{_BASE}/Patient/{request.patient_id}"
                           "/$everything", params=[("_count", str(count))], count=count,
                           offset=request.offset, issues=record.issues,
                           withheld=record.withheld)
        return _reply(bundle, record.issues)

    async def Search(self, request: archive_pb2.ArchiveSearchRequest,
                     context: grpc.aio.ServicerContext) -> archive_pb2.BundleReply:
        reader, query = await self._checked(
            request.context, f"Archive/search {request.resource_type}"[:128],
            request.resource_type or "(none)", [(p.name, p.value) for p in request.parameters])
        assert query is not None
        record = await self._service.read(reader, query.patient,
                                          operation=f"Archive/search {query.resource_type}",
                                          types={query.resource_type})
        bundle = searchset(run_search(query, record.resources),
                           base=f"{_BASE}/{query.resource_type}", params=query.canonical(),
                           count=query.count, offset=query.offset, issues=record.issues,
                           withheld=record.withheld)
        return _reply(bundle, record.issues)

    async def Summary(self, request: archive_pb2.SummaryRequest,
                      context: grpc.aio.ServicerContext) -> archive_pb2.BundleReply:
        reader, _ = await self._checked(request.context, "Archive/$summary")
        record = await self._service.read(reader, request.patient_id,
                                          operation="Archive/$summary")
        return _reply(await asyncio.to_thread(document, record), record.issues)
