"""The node's side of consult studies: the ``StudySource`` gRPC service over the site's
study folder (:class:`~federation.consult.studies.StudyFolder`). Only the gateway may call
it (the node's call guard policy). Files are read in worker threads, a chunk at a time:
an async generator advances only when gRPC's flow control has let the previous chunk out,
so a slow reader never makes the node hold more than a chunk or two.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc

from federation._proto.v1 import consult_pb2, consult_pb2_grpc
from federation.consult.studies import Chunk, StudyFolder
from federation.consult.wire import encode_chunk, manifest_to_proto
from federation.errors import InvalidInput, NotFound
from federation.rpc.handlers import add_with_raw_replies

__all__ = ["StudySourceServicer", "STUDY_SOURCE_POLICY", "add_study_source"]

_PREFIX = "/federation.v1.StudySource/"
_GATEWAY = frozenset({"gateway"})
STUDY_SOURCE_POLICY: dict[str, frozenset[str]] = {
    _PREFIX + "DescribeStudy": _GATEWAY,
    _PREFIX + "ReadStudyObject": _GATEWAY,
}


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
                              context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        chunks = self._studies().read(request.study_id, request.object, request.offset,
                                      request.chunk_size or None, digest=False)
        # each chunk read and encoded in a worker thread (the read releases the GIL), sent
        # as the bytes of a StudyChunk (see add_study_source)
        while (raw := await asyncio.to_thread(_next_encoded, chunks)) is not None:
            yield raw


def _next_encoded(chunks: Iterator[Chunk]) -> bytes | None:
    c = next(chunks, None)
    return None if c is None else encode_chunk(c)


def add_study_source(servicer: StudySourceServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer``; ``ReadStudyObject`` replies leave as the bytes it yields."""
    add_with_raw_replies(consult_pb2_grpc.add_StudySourceServicer_to_server, servicer, server,
                         ("ReadStudyObject",))
