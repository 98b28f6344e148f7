"""A node's side of the audit trail: fetch receipts, check them, catch a forked log.

**Fetching** (:func:`fetch_receipts`, run by the node's link every
``audit_receipts_interval_ms``): the gateway answers with a signed tree head and the
node's receipts under it. Before keeping anything the node checks that

1. the tree head is signed by the consortium's gateway (certificate chain to the CA);
2. it extends the newest tree head the node already keeps — a consistency proof
   (RFC 9162 §2.1.4) from that size to the new one, or the same root at the same size;
3. every receipt's bytes hash to its leaf hash, its audit path leads to the signed root
   (RFC 9162 §2.1.3), and its AuditEvent names this site.

**Verifying** (:func:`verify_receipts`, ``federation audit verify --node site.toml``):
every kept tree head's signature and every receipt's proof again, then the gateway's
current tree head and a consistency proof from every kept head to it. A gateway that
rewrote or forked its history cannot produce those proofs; the node then asks for each
receipt's inclusion in the current tree and names the first receipt whose leaf is no
longer there as the first bad entry.
"""

from __future__ import annotations

import json
import logging

from federation._proto.v1 import audit_pb2, audit_pb2_grpc
from federation.audit.log import TreeHead
from federation.audit.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from federation.audit.service import sth_from_proto
from federation.audit.tree_heads import verify_tree_head
from federation.audit.verify import Finding, VerifyReport
from federation.errors import IntegrityError
from federation.nodes.receipts import NodeReceipts, StoredReceipt

__all__ = ["check_receipt", "fetch_receipts", "verify_receipts"]

log = logging.getLogger("federation.audit")
CALL_TIMEOUT = 10.0


def check_receipt(r: StoredReceipt, sth: TreeHead, site_id: str) -> None:
    """Raise :class:`IntegrityError` unless the receipt is proven in ``sth`` and its
    AuditEvent is about an exchange ``site_id`` took part in."""
    if leaf_hash(r.leaf) != r.leaf_hash:
        raise IntegrityError(f"receipt for leaf {r.leaf_index}: its AuditEvent does not hash "
                             "to its leaf hash")
    verify_inclusion(r.leaf_hash, r.leaf_index, sth.tree_size, r.audit_path, sth.root_hash)
    try:
        event = json.loads(r.leaf)
    except ValueError:
        raise IntegrityError(f"receipt for leaf {r.leaf_index} is not an AuditEvent") from None
    sites = {ref.get("identifier", {}).get("value")
             for agent in event.get("agent", []) for ref in (agent.get("who", {}),
                                                             agent.get("location", {}))
             if ref.get("identifier", {}).get("system") == "urn:federation:site"}
    if event.get("id") != str(r.leaf_index) or site_id not in sites:
        raise IntegrityError(f"receipt for leaf {r.leaf_index} is not about an exchange of "
                             f"site {site_id}")


async def _consistent(stub: audit_pb2_grpc.AuditStub, old: TreeHead, new: TreeHead) -> None:
    if old.tree_size > new.tree_size:
        raise IntegrityError(f"the gateway signed {old.tree_size} leaves before and now shows "
                             f"only {new.tree_size}: its log lost entries")
    if old.tree_size == new.tree_size:
        proof: list[bytes] = []
    else:
        reply = await stub.GetConsistencyProof(audit_pb2.ConsistencyProofRequest(
            first=old.tree_size, second=new.tree_size), timeout=CALL_TIMEOUT)
        proof = list(reply.proof)
    verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof)


async def fetch_receipts(stub: audit_pb2_grpc.AuditStub, store: NodeReceipts, ca_pem: bytes,
                         site_id: str) -> int:
    """Fetch, check and keep the node's new receipts; returns how many were new.
    :class:`IntegrityError` (nothing kept) when the gateway's answer does not check out."""
    new = 0
    while True:
        batch = await stub.FetchReceipts(audit_pb2.FetchReceiptsRequest(
            from_leaf=store.next_leaf()), timeout=CALL_TIMEOUT)
        sth = sth_from_proto(batch.tree_head)
        verify_tree_head(sth, ca_pem)
        previous = store.latest_tree_head()
        if previous is not None:
            await _consistent(stub, previous, sth)
        receipts = [StoredReceipt(r.leaf_index, bytes(r.leaf), bytes(r.leaf_hash),
                                  sth.tree_size, [bytes(p) for p in r.audit_path])
                    for r in batch.receipts]
        for receipt in receipts:
            check_receipt(receipt, sth, site_id)
        new += store.keep(sth, receipts, batch.next_leaf)
        if not batch.more:
            return new


async def verify_receipts(stub: audit_pb2_grpc.AuditStub, store: NodeReceipts, ca_pem: bytes,
                          site_id: str) -> VerifyReport:
    """Check everything the node keeps against the gateway's current log."""
    report = VerifyReport()
    heads = {h.tree_size: h for h in store.tree_heads()}
    for sth in heads.values():
        report.tree_heads_checked += 1
        try:
            verify_tree_head(sth, ca_pem)
        except IntegrityError as exc:
            report.add(Finding("signature", max(sth.tree_size - 1, 0), exc.message))
    receipts = store.receipts()
    for r in receipts:
        report.leaves_checked += 1
        try:
            check_receipt(r, heads[r.tree_size], site_id)
        except (IntegrityError, KeyError) as exc:
            message = exc.message if isinstance(exc, IntegrityError) else "its tree head is gone"
            report.add(Finding("receipt", r.leaf_index, message))
    current = sth_from_proto(await stub.GetSignedTreeHead(
        audit_pb2.GetSignedTreeHeadRequest(fresh=True), timeout=CALL_TIMEOUT))
    report.tree_size = current.tree_size
    try:
        verify_tree_head(current, ca_pem)
    except IntegrityError as exc:
        report.add(Finding("signature", None, f"the gateway's current {exc.message}"))
        return report
    forked = None
    for sth in heads.values():
        try:
            await _consistent(stub, sth, current)
        except IntegrityError as exc:
            forked = forked or sth
            report.add(Finding("fork", 0, f"tree head of size {sth.tree_size}: {exc.message}"))
    if forked is not None:
        await _pin(stub, receipts, current, report)
    return report


async def _pin(stub: audit_pb2_grpc.AuditStub, receipts: list[StoredReceipt],
               current: TreeHead, report: VerifyReport) -> None:
    """Name the first receipt whose leaf the current tree no longer holds."""
    for r in receipts:
        if r.leaf_index >= current.tree_size:
            report.add(Finding("forked-leaf", r.leaf_index, f"leaf {r.leaf_index}, which this node "
                               "holds a receipt for, is gone from the gateway's log"))
            return
        reply = await stub.GetInclusionProof(audit_pb2.InclusionProofRequest(
            leaf_index=r.leaf_index, tree_size=current.tree_size), timeout=CALL_TIMEOUT)
        try:
            verify_inclusion(r.leaf_hash, r.leaf_index, current.tree_size,
                             [bytes(p) for p in reply.audit_path], current.root_hash)
        except ProofError:
            report.add(Finding("forked-leaf", r.leaf_index, (
                f"leaf {r.leaf_index}: the gateway's log no longer holds the AuditEvent this "
                "node has a receipt for — it was rewritten after the gateway signed it")))
            return
