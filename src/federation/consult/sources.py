"""The gateway's client to the nodes' ``StudySource`` service, on the same mTLS channel
as every other call to that node (:meth:`NodeClients.channel`); manifests convert
in :mod:`.wire`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from federation._proto.v1 import consult_pb2, consult_pb2_grpc
from federation.consult.studies import Chunk, StudyManifest, StudyObject
from federation.consult.wire import decode_chunk, manifest_from_proto
from federation.errors import Unavailable
from federation.rpc.status import error_from_rpc
from federation.store import GatewayStore

__all__ = ["StudySources"]

_READ = "/federation.v1.StudySource/ReadStudyObject"


class StudySources:
    def __init__(self, store: GatewayStore, clients: Any, deadline_s: float) -> None:
        self._store, self._clients, self._deadline = store, clients, deadline_s

    async def _channel(self, site_id: str) -> Any:
        node = await asyncio.to_thread(self._store.get_node, site_id)
        if node is None or node.state != "online":
            state = "has never registered" if node is None else f"is {node.state}"
            raise Unavailable(f"site {site_id}'s node {state}: its studies are read from it")
        return self._clients.channel(site_id, node.endpoint)

    async def _stub(self, site_id: str) -> consult_pb2_grpc.StudySourceStub:
        return consult_pb2_grpc.StudySourceStub(await self._channel(site_id))

    async def describe(self, site_id: str, study_id: str, patient_id: str) -> StudyManifest:
        stub = await self._stub(site_id)
        try:
            reply = await stub.DescribeStudy(consult_pb2.DescribeStudyRequest(
                study_id=study_id, patient_id=patient_id), timeout=self._deadline)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, f"site {site_id}") from None
        return manifest_from_proto(reply)

    async def read(self, site_id: str, study_id: str, obj: StudyObject,
                   offset: int) -> AsyncIterator[Chunk]:
        """The object's chunks from ``offset`` as the node sends them (unchecked)."""
        channel = await self._channel(site_id)
        # replies as bytes: the chunk's data stays where gRPC put it (see .wire)
        call = channel.unary_stream(
            _READ, request_serializer=consult_pb2.ReadStudyObjectRequest.SerializeToString,
            response_deserializer=None)(consult_pb2.ReadStudyObjectRequest(
                study_id=study_id, object=obj.name, offset=offset, chunk_size=obj.chunk_size))
        where = f"site {site_id}"
        try:
            async for raw in call:
                yield decode_chunk(raw, where)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, f"site {site_id}") from None
        finally:
            call.cancel()
