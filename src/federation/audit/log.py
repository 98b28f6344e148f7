"""The Merkle audit log in the gateway store: reads, proofs and signed tree heads.

Leaves are appended by :mod:`federation.store.audit_append`, in the transaction that writes
the exchange-log rows. :class:`AuditLog` reads: the head, leaves, inclusion and
consistency proofs (RFC 9162 §2.1.3–2.1.4) computed from tiles (a proof in a log of a
million leaves reads a few hundred hashes at most), and signed tree heads (RFC 6962 §3.5), one
per tree size (replicas signing the same size keep the first).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from federation.audit.merkle import (
    Frontier,
    consistency_proof,
    inclusion_proof,
    range_hash,
    root_of,
)
from federation.errors import IntegrityError, InvalidInput, NotFound
from federation.store.audit_append import HEAD_ID as _HEAD
from federation.store.audit_append import TILE_LEVELS
from federation.store.gateway_store import StoreSessions
from federation.store.models import (
    AuditHead,
    AuditLeaf,
    AuditParty,
    AuditTile,
    AuditTreeHead,
    ExchangeEntry,
    ExchangeLog,
)

__all__ = ["AuditLog", "Head", "Leaf", "TreeHead", "StoreSubtrees"]



@dataclass(frozen=True, slots=True)
class Head:
    tree_size: int
    root_hash: bytes
    frontier: bytes


@dataclass(frozen=True, slots=True)
class Leaf:
    index: int
    exchange_id: int | None
    leaf: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed tree head as stored: what was signed, by whom, and the signature."""

    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    signature: bytes
    signer_cert: str

    @classmethod
    def of(cls, m: AuditTreeHead) -> TreeHead:
        return cls(m.tree_size, bytes(m.root_hash), m.timestamp_ms, bytes(m.signature),
                   m.signer_cert)


# ---------------------------------------------------------------------------- proofs


class StoreSubtrees:
    """Perfect-subtree hashes from the store: tiles where they exist, leaves below."""

    def __init__(self, s: Session) -> None:
        self._s = s
        self._memo: dict[tuple[int, int], bytes] = {}

    def subtree(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key not in self._memo:
            stored = (level // TILE_LEVELS) * TILE_LEVELS
            span = 1 << (level - stored)
            lo, hi = index * span, (index + 1) * span
            if stored == 0:
                rows = self._s.execute(select(AuditLeaf.leaf_hash).where(
                    col(AuditLeaf.idx) >= lo, col(AuditLeaf.idx) < hi)
                    .order_by(col(AuditLeaf.idx))).scalars().all()
                what = f"leaves {lo}–{hi - 1}"
            else:
                rows = self._s.execute(select(AuditTile.hash).where(
                    col(AuditTile.level) == stored, col(AuditTile.idx) >= lo,
                    col(AuditTile.idx) < hi).order_by(col(AuditTile.idx))).scalars().all()
                what = f"tiles {lo}–{hi - 1} of level {stored}"
            if len(rows) != span:
                raise IntegrityError(f"the audit log is missing {what}; run `federation audit "
                               "verify` to find out what changed")
            self._memo[key] = root_of([bytes(r) for r in rows])
        return self._memo[key]


class AuditLog(StoreSessions):
    """Reads of the audit log and the signed tree heads."""

    def head(self) -> Head:
        with self._read() as s:
            row = s.get(AuditHead, _HEAD)
            if row is None:
                return Head(0, Frontier().root(), b"")
            return Head(row.tree_size, bytes(row.root_hash), bytes(row.frontier))

    def leaves(self, start: int, end: int) -> list[Leaf]:
        with self._read() as s:
            rows = s.execute(select(AuditLeaf).where(
                col(AuditLeaf.idx) >= start, col(AuditLeaf.idx) < end)
                .order_by(col(AuditLeaf.idx))).scalars().all()
            return [Leaf(r.idx, r.exchange_id, bytes(r.leaf), bytes(r.leaf_hash)) for r in rows]

    def leaf_for_exchange(self, exchange_id: int) -> Leaf:
        with self._read() as s:
            r = s.execute(select(AuditLeaf).where(col(AuditLeaf.exchange_id) == exchange_id)
                          ).scalars().first()
            if r is None:
                raise NotFound(f"exchange {exchange_id} has no audit leaf")
            return Leaf(r.idx, r.exchange_id, bytes(r.leaf), bytes(r.leaf_hash))

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        self._check_size(tree_size)
        with self._read() as s:
            return inclusion_proof(StoreSubtrees(s), index, tree_size)

    def inclusion_proofs(self, indexes: list[int], tree_size: int) -> list[list[bytes]]:
        """Audit paths of several leaves in one tree, sharing the subtrees they meet."""
        self._check_size(tree_size)
        with self._read() as s:
            source = StoreSubtrees(s)
            return [inclusion_proof(source, index, tree_size) for index in indexes]

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        self._check_size(new)
        with self._read() as s:
            return consistency_proof(StoreSubtrees(s), old, new)

    def root_at(self, tree_size: int) -> bytes:
        """The root of the first ``tree_size`` leaves (from tiles; no full scan)."""
        self._check_size(tree_size)
        with self._read() as s:
            return range_hash(StoreSubtrees(s), 0, tree_size)

    def _check_size(self, tree_size: int) -> None:
        size = self.head().tree_size
        if not 0 <= tree_size <= size:
            raise InvalidInput(f"the audit log has {size} leaves; there is no tree of "
                               f"{tree_size}")

    # ------------------------------------------------------------------ tree heads

    def add_tree_head(self, sth: TreeHead) -> TreeHead:
        """Keep a signed tree head; the first one signed for a size wins."""
        with self._write() as s:
            dialect = s.get_bind().dialect.name
            stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(
                AuditTreeHead)
            s.connection().execute(stmt.values(
                tree_size=sth.tree_size, root_hash=sth.root_hash, timestamp_ms=sth.timestamp_ms,
                signature=sth.signature, signer_cert=sth.signer_cert,
            ).on_conflict_do_nothing(index_elements=["tree_size"]))
            return TreeHead.of(s.get_one(AuditTreeHead, sth.tree_size))

    def latest_tree_head(self) -> TreeHead | None:
        with self._read() as s:
            row = s.execute(select(AuditTreeHead).order_by(
                col(AuditTreeHead.tree_size).desc()).limit(1)).scalars().first()
            return TreeHead.of(row) if row else None

    def tree_heads(self) -> list[TreeHead]:
        with self._read() as s:
            return [TreeHead.of(r) for r in s.execute(select(AuditTreeHead).order_by(
                col(AuditTreeHead.tree_size))).scalars().all()]

    # ------------------------------------------------------------------ reports

    def exchanges(self, since: dt.datetime, until: dt.datetime) -> list[ExchangeEntry]:
        """Exchange-log rows in [since, until), oldest first (for reports)."""
        with self._read() as s:
            rows = s.execute(select(ExchangeLog).where(
                col(ExchangeLog.at) >= since, col(ExchangeLog.at) < until)
                .order_by(col(ExchangeLog.at), col(ExchangeLog.id))).scalars().all()
            return [ExchangeEntry.of(m) for m in rows]

    # ------------------------------------------------------------------ receipts

    def leaves_of_site(self, site_id: str, after: int, below: int, limit: int) -> list[Leaf]:
        """The leaves ``site_id``'s node took part in, index in (after, below)."""
        with self._read() as s:
            rows = s.execute(select(AuditLeaf).join(
                AuditParty, col(AuditParty.leaf_idx) == col(AuditLeaf.idx)).where(
                col(AuditParty.site_id) == site_id, col(AuditParty.leaf_idx) > after,
                col(AuditParty.leaf_idx) < below).order_by(col(AuditLeaf.idx)).limit(limit)
            ).scalars().all()
            return [Leaf(r.idx, r.exchange_id, bytes(r.leaf), bytes(r.leaf_hash)) for r in rows]
