"""The ``Audit`` gRPC service: signed tree heads, proofs, and each node's receipts.

Receipts (the design): a node's receipt for an exchange is the AuditEvent's canonical
bytes, its leaf index and leaf hash, and its audit path in a *signed tree head* that
includes it. Leaves are not signed one by one (that would cost a signature per exchange
on the hot path); instead :meth:`FetchReceipts` signs the current head when the log has
grown past the newest signed one, so a node receives receipts for everything appended
before its call, all proven against one signature. What the node keeps (tree heads and
receipts, :mod:`federation.nodes.receipts`) lets it check later, with consistency
proofs, that the gateway never rewrote or forked what it once signed.

Who may call what is one table (:data:`AUDIT_POLICY`, default deny, the pattern of
``GATEWAY_POLICY``); the calling node is known only by its certificate.
"""

from __future__ import annotations

import asyncio

import grpc

from federation._proto.v1 import audit_pb2, audit_pb2_grpc
from federation.audit.log import AuditLog, TreeHead
from federation.audit.tree_heads import TreeHeadSigner
from federation.errors import InvalidInput
from federation.rpc.guard import current_peer

__all__ = ["AUDIT_POLICY", "AuditServicer", "sth_to_proto", "sth_from_proto"]

_PREFIX = "/federation.v1.Audit/"
_NODE = frozenset({"node"})
_NODE_OR_PEOPLE = frozenset({"node", "operator"})
DEFAULT_LIMIT = 500
MAX_LIMIT = 2000

#: which certificate roles may call which Audit method (default deny for anything missing)
AUDIT_POLICY: dict[str, frozenset[str]] = {
    _PREFIX + "GetSignedTreeHead": _NODE_OR_PEOPLE,
    _PREFIX + "GetInclusionProof": _NODE_OR_PEOPLE,
    _PREFIX + "GetConsistencyProof": _NODE_OR_PEOPLE,
    _PREFIX + "FetchReceipts": _NODE,
}


def sth_to_proto(sth: TreeHead) -> audit_pb2.SignedTreeHead:
    return audit_pb2.SignedTreeHead(tree_size=sth.tree_size, root_hash=sth.root_hash,
                                    timestamp_ms=sth.timestamp_ms, signature=sth.signature,
                                    signer_cert_pem=sth.signer_cert)


def sth_from_proto(m: audit_pb2.SignedTreeHead) -> TreeHead:
    return TreeHead(m.tree_size, bytes(m.root_hash), m.timestamp_ms, bytes(m.signature),
                    m.signer_cert_pem)


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, log: AuditLog, signer: TreeHeadSigner) -> None:
        self._log = log
        self._signer = signer

    async def _head(self, fresh: bool) -> TreeHead:
        latest = None if fresh else await asyncio.to_thread(self._log.latest_tree_head)
        return latest or await asyncio.to_thread(self._signer.sign_head)

    async def GetSignedTreeHead(self, request: audit_pb2.GetSignedTreeHeadRequest,
                                context: grpc.aio.ServicerContext) -> audit_pb2.SignedTreeHead:
        return sth_to_proto(await self._head(request.fresh))

    async def GetInclusionProof(self, request: audit_pb2.InclusionProofRequest,
                                context: grpc.aio.ServicerContext) -> audit_pb2.InclusionProof:
        size = request.tree_size or (await self._head(False)).tree_size
        if request.leaf_index >= size:
            raise InvalidInput(f"leaf {request.leaf_index} is not in a tree of {size} leaves")
        [leaf] = await asyncio.to_thread(self._log.leaves, request.leaf_index,
                                         request.leaf_index + 1)
        path = await asyncio.to_thread(self._log.inclusion_proof, request.leaf_index, size)
        return audit_pb2.InclusionProof(leaf_index=request.leaf_index, tree_size=size,
                                        leaf_hash=leaf.leaf_hash, audit_path=path)

    async def GetConsistencyProof(self, request: audit_pb2.ConsistencyProofRequest,
                                  context: grpc.aio.ServicerContext
                                  ) -> audit_pb2.ConsistencyProof:
        second = request.second or (await self._head(False)).tree_size
        if request.first > second:
            raise InvalidInput(f"no consistency proof from {request.first} leaves to {second}: "
                               "the first tree must not be larger")
        proof = await asyncio.to_thread(self._log.consistency_proof, request.first, second)
        return audit_pb2.ConsistencyProof(first=request.first, second=second, proof=proof)

    async def FetchReceipts(self, request: audit_pb2.FetchReceiptsRequest,
                            context: grpc.aio.ServicerContext) -> audit_pb2.ReceiptBatch:
        site_id = current_peer.get().site_id or ""
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        sth = await self._head(True)
        leaves = await asyncio.to_thread(self._log.leaves_of_site, site_id,
                                         request.from_leaf - 1, sth.tree_size, limit + 1)
        more = len(leaves) > limit
        leaves = leaves[:limit]
        paths = await asyncio.to_thread(self._log.inclusion_proofs,
                                        [leaf.index for leaf in leaves], sth.tree_size)
        next_leaf = leaves[-1].index + 1 if more else max(sth.tree_size, request.from_leaf)
        return audit_pb2.ReceiptBatch(
            tree_head=sth_to_proto(sth), next_leaf=next_leaf, more=more,
            receipts=[audit_pb2.Receipt(leaf_index=leaf.index, leaf=leaf.leaf,
                                        leaf_hash=leaf.leaf_hash, audit_path=path)
                      for leaf, path in zip(leaves, paths, strict=True)])
