"""The node's side of consult studies: the ``StudySource`` gRPC service over the site's
study folder (:class:`~federation.consult.studies.StudyFolder`). Only the gateway may call
it (the node's call guard policy). Files are read in worker threads, a chunk at a time:
an async generator advances only when gRPC's flow control has let the previous chunk out,
so a slow reader never makes the node hold more than a chunk or two.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from federation._proto.v1 import consult_pb2, consult_pb2_grpc
from federation.consult.studies import StudyFolder
from federation.consult.wire import manifest_to_proto
from federation.errors import InvalidInput, NotFound

__all__ = ["StudySourceServicer", "STUDY_SOURCE_POLICY"]

_PREFIX = "/federation.v1.StudySource/"
_GATEWAY = frozenset({"gateway"})
STUDY_SOURCE_POLICY: dict[str, frozenset[str]] = {
    _PREFIX + "DescribeStudy": _GATEWAY,
    _PREFIX + "ReadStudyObject": _GATEWAY,
}
_END = object()


class StudySourceServicer(consult_pb2_grpc.StudySourceServicer):
    def __init__(self, folder: StudyFolder | None, site_id: str) -> None:
        self._folder = folder
        self._site = site_id

    def _studies(self) -> StudyFolder:
        if self._folder is None:
            raise NotFound(f"site {self._site} keeps no studies for consults (no studies_dir)")
        return self._folder

    async def DescribeStudy(self, request: consult_pb2.DescribeStudyRequest,
                            context: grpc.aio.ServicerContext) -> consult_pb2.StudyManifest:
        if not request.study_id or not request.patient_id:
            raise InvalidInput("DescribeStudy needs study_id and patient_id")
        manifest = await asyncio.to_thread(self._studies().describe, request.study_id,
                                           request.patient_id)
        return manifest_to_proto(manifest)

    async def ReadStudyObject(self, request: consult_pb2.ReadStudyObjectRequest,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
        chunks = self._studies().read(request.study_id, request.object, request.offset,
                                      request.chunk_size or None)
        while (c := await asyncio.to_thread(next, chunks, _END)) is not _END:
            yield consult_pb2.StudyChunk(offset=c.offset, data=c.data,  # type: ignore[union-attr]
                                         sha256=c.sha256, index=c.index)  # type: ignore[union-attr]
