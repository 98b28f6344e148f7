"""Signed tree heads (RFC 6962 §3.5): the gateway's signed word on the log's size and root.

What is signed is the RFC's ``TreeHeadSignature`` structure::

    version (1 byte, 0 = v1) ‖ signature_type (1 byte, 1 = tree_hash)
    ‖ timestamp (8 bytes, ms since the epoch) ‖ tree_size (8 bytes) ‖ sha256_root_hash (32)

with the key of the gateway's CA-certified TLS certificate (:mod:`federation.security.signing`);
the certificate is stored with the signature, so a verifier needs only the consortium CA.

Heads are signed periodically (``audit_sth_interval_ms``) and on demand when a node asks
for receipts beyond the newest one. Any replica may sign; the first head signed for a
size is kept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import struct

from federation.audit.log import AuditLog, TreeHead
from federation.errors import FederationError, IntegrityError
from federation.security.signing import Signer, verify_gateway_signature

__all__ = ["tree_head_payload", "TreeHeadSigner", "verify_tree_head"]

log = logging.getLogger("federation.audit")


def tree_head_payload(tree_size: int, timestamp_ms: int, root_hash: bytes) -> bytes:
    if len(root_hash) != 32:
        raise IntegrityError(f"a tree head's root hash has 32 bytes, not {len(root_hash)}")
    return struct.pack(">BBQQ", 0, 1, timestamp_ms, tree_size) + root_hash


def verify_tree_head(sth: TreeHead, ca_pem: bytes) -> None:
    """Raise :class:`IntegrityError` unless the consortium's gateway signed ``sth``."""
    at = dt.datetime.fromtimestamp(sth.timestamp_ms / 1000, dt.UTC)
    try:
        verify_gateway_signature(tree_head_payload(sth.tree_size, sth.timestamp_ms,
                                                   sth.root_hash),
                                 sth.signature, sth.signer_cert, ca_pem, at)
    except IntegrityError as exc:
        raise IntegrityError(f"signed tree head of size {sth.tree_size}: {exc.message}") from None


class TreeHeadSigner:
    """Signs the log's current head with the gateway's key."""

    def __init__(self, log_: AuditLog, signer: Signer) -> None:
        self._log = log_
        self._signer = signer

    def sign_head(self, now: dt.datetime | None = None) -> TreeHead:
        """The tree head for the current size: the stored one if a replica already signed
        this size, else a fresh signature."""
        head = self._log.head()
        latest = self._log.latest_tree_head()
        if latest is not None and latest.tree_size >= head.tree_size:
            return latest
        at = now or dt.datetime.now(dt.UTC)
        ts = int(at.timestamp() * 1000)
        signature = self._signer.sign(tree_head_payload(head.tree_size, ts, head.root_hash))
        return self._log.add_tree_head(TreeHead(head.tree_size, head.root_hash, ts, signature,
                                                self._signer.cert_pem.decode()))

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Sign a head every ``interval_s`` while the log grows, until ``stop``."""
        while not stop.is_set():
            try:
                sth = await asyncio.to_thread(self.sign_head)
                log.debug("audit tree head: size %d", sth.tree_size)
            except FederationError as exc:
                log.warning("could not sign an audit tree head: %s", exc.message)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass
