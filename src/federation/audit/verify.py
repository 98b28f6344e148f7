"""``federation audit verify`` for administrators: recompute the whole log from the store.

Every check below runs over the leaves in index order, in chunks, so a log of a million
leaves is verified in one pass without holding it in memory:

=================  ========================================================================
finding            what it means
=================  ========================================================================
``signature``      a signed tree head whose signature, certificate or CA does not check out
``deleted``        a leaf index is missing (rows deleted from ``audit_leaf``)
``edited``         a leaf's bytes no longer hash to its stored leaf hash
``reordered``      a leaf holds the AuditEvent appended at another index (its ``id``)
``exchange``       the exchange-log row no longer renders to its leaf (edited), is gone, or
                   an exchange row after the trail began has no leaf at all
``tile``           a stored subtree hash differs from the leaves under it
``tree-head``      the leaves no longer produce the root the gateway signed for that size —
                   something before it was rewritten (hashes recomputed to hide an edit)
``head``           the log head (size, root) disagrees with the leaves
=================  ========================================================================

The report names the **first bad entry**: the finding with the lowest leaf index, those
naming one leaf before those naming a range (``tile``, ``tree-head``, ``head`` start at
the first leaf of their range). The tree is rebuilt from the *stored* leaf hashes, so an
edit that left its hash behind shows as ``edited`` only. A store-only attacker who
recomputes every hash still cannot re-sign tree heads: the ``tree-head`` finding gives
the range, the ``tile`` finding narrows it to 16 leaves, and the nodes' receipts
(:mod:`federation.audit.receipts`) pin the exact leaf.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import multiprocessing
from dataclasses import dataclass, field

import orjson
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection

from federation.audit.events import audit_event, canonical
from federation.audit.log import TreeHead
from federation.audit.merkle import Frontier, leaf_hash
from federation.audit.tree_heads import verify_tree_head
from federation.errors import IntegrityError
from federation.store.audit_append import HEAD_ID, TILE_LEVELS
from federation.store.database import make_engine, read_only
from federation.store.models import (
    AuditHead,
    AuditLeaf,
    AuditTile,
    AuditTreeHead,
    ExchangeEntry,
    ExchangeLog,
)

__all__ = ["Finding", "VerifyReport", "verify_store"]

CHUNK = 20_000
#: findings that name one leaf; the others (tile, tree-head, head) name a range
EXACT = frozenset({"signature", "deleted", "edited", "reordered", "exchange", "receipt",
                   "forked-leaf"})
MAX_FINDINGS = 1000


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    leaf: int | None
    message: str
    exchange_id: int | None = None

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "leaf": self.leaf, "exchange_id": self.exchange_id,
                "message": self.message}


@dataclass(slots=True)
class VerifyReport:
    tree_size: int = 0
    #: the root the leaves give (recomputed from the stored leaf hashes)
    root_hash: bytes = b""
    leaves_checked: int = 0
    tree_heads_checked: int = 0
    exchanges_before_trail: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        """The first bad entry: the finding at the lowest leaf index, findings about one
        leaf before those about a range (which follow from them)."""
        if not self.findings:
            return None
        return min(self.findings, key=lambda f: (f.kind not in EXACT,
                                                 f.leaf if f.leaf is not None else -1))

    def summary(self) -> str:
        """One line for people: what checked out, or the first bad entry."""
        if self.ok:
            return (f"ok: {self.leaves_checked} entries and {self.tree_heads_checked} signed "
                    f"tree heads check out (tree size {self.tree_size})")
        first = self.first
        assert first is not None
        return (f"TAMPERED: {len(self.findings)} finding(s); first bad entry: leaf "
                f"{first.leaf} ({first.kind}): {first.message}")

    def add(self, finding: Finding) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(finding)

    def as_json(self) -> dict[str, object]:
        first = self.first
        return {"ok": self.ok, "tree_size": self.tree_size, "root_hash": self.root_hash.hex(),
                "leaves_checked": self.leaves_checked,
                "tree_heads_checked": self.tree_heads_checked,
                "exchanges_before_trail": self.exchanges_before_trail,
                "first_bad_entry": first.as_json() if first else None,
                "findings": [f.as_json() for f in self.findings]}


_X = ExchangeLog.__table__.c
_L = AuditLeaf.__table__.c


def _entry(row: object) -> ExchangeEntry:
    m = row._mapping  # type: ignore[attr-defined]
    return ExchangeEntry(m["at"], m["correlation_id"], m["requester_kind"], m["requester_id"],
                         m["requester_site"], m["target_site"], m["operation"], m["purpose"],
                         m["patient_ref"], m["outcome"], m["status_code"], m["detail"],
                         m["records"], m["duration_ms"], m["id"])


def _leaf_ranges(top: int) -> list[tuple[int, int]]:
    """[lo, hi) index ranges of CHUNK leaves each, covering [0, top)."""
    return [(lo, min(lo + CHUNK, top)) for lo in range(0, top, CHUNK)]


Checked = tuple[list[tuple[int, bytes]], list[Finding]]


def _check_range(conn: Connection, lo: int, hi: int) -> Checked:
    """The per-leaf checks of leaves [lo, hi): their (index, stored hash) in order, and
    what is wrong with them on their own (edited, reordered, exchange rows)."""
    rows = conn.execute(select(_L.idx, _L.exchange_id, _L.leaf, _L.leaf_hash).where(
        _L.idx >= lo, _L.idx < hi).order_by(_L.idx)).all()
    exchanges = _exchanges(conn, [x for _, x, _, _ in rows if x is not None])
    report = VerifyReport()
    pairs = []
    for idx, exchange_id, data, stored in rows:
        idx, data, stored = int(idx), bytes(data), bytes(stored)
        if leaf_hash(data) != stored:
            report.add(Finding("edited", idx, f"leaf {idx} no longer matches its leaf "
                               "hash: its AuditEvent was edited", exchange_id))
        _check_exchange(report, idx, exchange_id, data, exchanges)
        pairs.append((idx, stored))
    return pairs, report.findings


_URL: str = ""


def _init_worker(url: str) -> None:
    global _URL
    _URL = url


def _check_range_in_worker(bounds: tuple[int, int]) -> Checked:
    engine = _worker_engine()
    with engine.connect() as conn:
        return _check_range(conn, *bounds)


@functools.cache
def _worker_engine() -> Engine:
    return read_only(make_engine(_URL))


def _exchanges(conn: Connection, ids: list[int]) -> dict[int, ExchangeEntry]:
    if not ids:
        return {}
    rows = conn.execute(select(ExchangeLog.__table__).where(
        _X.id >= min(ids), _X.id <= max(ids))).all()
    return {int(r._mapping["id"]): _entry(r) for r in rows}


def _moved_from(data: bytes) -> str | None:
    try:
        return str(orjson.loads(data).get("id"))
    except (orjson.JSONDecodeError, AttributeError):
        return None


def verify_store(engine: Engine, ca_pem: bytes, *, workers: int = 1) -> VerifyReport:
    """Recompute the audit log in ``engine``'s store; see the module doc for the checks.
    ``workers`` > 1 runs the per-leaf checks in that many processes."""
    report = VerifyReport()
    # one snapshot for the main pass (read-only: never blocks the gateways' writers); the
    # leaves it checks are those below the head it read, which appends never change
    with read_only(engine).connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        head = conn.execute(select(AuditHead.__table__).where(
            AuditHead.__table__.c.id == HEAD_ID)).first()
        heads = [TreeHead(int(r.tree_size), bytes(r.root_hash), int(r.timestamp_ms),
                          bytes(r.signature), r.signer_cert)
                 for r in conn.execute(select(AuditTreeHead.__table__).order_by(
                     AuditTreeHead.__table__.c.tree_size)).all()]
        tiles = {(int(r.level), int(r.idx)): bytes(r.hash)
                 for r in conn.execute(select(AuditTile.__table__)).all()}
        stored_top = conn.execute(select(func.coalesce(func.max(_L.idx) + 1, 0))).scalar_one()
        top = max(int(head.tree_size) if head is not None else 0,
                  max((h.tree_size for h in heads), default=0))
        _check_signatures(report, heads, ca_pem)
        frontier = _walk(engine, conn, report, heads, tiles, top or int(stored_top), workers)
        extra = conn.execute(select(func.count()).where(_L.idx >= max(top, 1))).scalar_one() \
            if top else 0
        if extra:
            report.add(Finding("head", top, f"{extra} leaves lie beyond the log head and every "
                               "signed tree head: appended around the log"))
        _check_unaudited(conn, report)
    report.tree_size, report.root_hash = frontier.size, frontier.root()
    for sth in heads:
        if sth.tree_size > frontier.size:
            report.add(Finding("tree-head", frontier.size, (
                f"the gateway signed a tree of {sth.tree_size} leaves but only "
                f"{frontier.size} remain: leaves from {frontier.size} on were deleted")))
    if head is not None:
        size, root = int(head.tree_size), bytes(head.root_hash)
        if size != frontier.size or root != frontier.root():
            report.add(Finding("head", min(size, frontier.size), (
                f"the log head says {size} leaves with root {root.hex()[:16]}…, the leaves "
                f"give {frontier.size} with root {frontier.root().hex()[:16]}…")))
    return report


def _check_signatures(report: VerifyReport, heads: list[TreeHead], ca_pem: bytes) -> None:
    for sth in heads:
        report.tree_heads_checked += 1
        try:
            verify_tree_head(sth, ca_pem)
        except IntegrityError as exc:
            report.add(Finding("signature", max(sth.tree_size - 1, 0), exc.message))


def _walk(engine: Engine, conn: Connection, report: VerifyReport, heads: list[TreeHead],
          tiles: dict[tuple[int, int], bytes], top: int, workers: int) -> Frontier:
    """Per-leaf checks (in ``workers`` processes, chunk by chunk), then the tree rebuilt in
    order from the stored hashes, against the tiles and the signed tree heads."""
    frontier = Frontier()
    pending = list(heads)
    last_signed = 0

    def on_subtree(level: int, index: int, h: bytes) -> None:
        if level % TILE_LEVELS == 0:
            stored = tiles.get((level, index))
            if stored is not None and stored != h:
                lo = index << level
                report.add(Finding("tile", lo, (
                    f"the stored hash of leaves {lo}–{lo + (1 << level) - 1} differs from "
                    "those leaves: one of them changed after it was appended")))

    ranges = _leaf_ranges(top)
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(ranges) > 1:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(
                workers, _init_worker, (engine.url.render_as_string(hide_password=False),)))
            checked = pool.imap(_check_range_in_worker, ranges)
        else:
            checked = (_check_range(conn, lo, hi) for lo, hi in ranges)
        for pairs, findings in checked:
            for finding in findings:
                report.add(finding)
            for idx, stored_hash in pairs:
                if idx != frontier.size:
                    report.add(Finding("deleted", frontier.size, (
                        f"leaves {frontier.size}–{idx - 1} are missing: deleted from the log")))
                # the tree is rebuilt from the *stored* hashes: an edit that left its hash
                # behind is named above; hashes recomputed to hide one break a signed root
                frontier.append(stored_hash, on_subtree)
                report.leaves_checked += 1
                while pending and pending[0].tree_size <= frontier.size:
                    sth = pending.pop(0)
                    if sth.tree_size == frontier.size and sth.root_hash != frontier.root():
                        report.add(Finding("tree-head", last_signed, (
                            f"leaves {last_signed}–{sth.tree_size - 1} no longer give the root "
                            f"the gateway signed for size {sth.tree_size} "
                            f"({_when(sth.timestamp_ms)}): history was rewritten")))
                    last_signed = sth.tree_size
    return frontier


def _check_exchange(report: VerifyReport, idx: int, exchange_id: int | None, data: bytes,
                    exchanges: dict[int, ExchangeEntry]) -> None:
    if exchange_id is None:
        return
    entry = exchanges.get(exchange_id)
    if entry is None:
        report.add(Finding("exchange", idx, f"exchange {exchange_id} (leaf {idx}) was deleted "
                           "from the exchange log", exchange_id))
        return
    if canonical(audit_event(entry, exchange_id, idx)) == data:
        return
    moved = _moved_from(data)
    if moved is not None and moved != str(idx):
        report.add(Finding("reordered", idx, f"leaf {idx} holds the AuditEvent appended as "
                           f"leaf {moved}: leaves were reordered", exchange_id))
    else:
        report.add(Finding("exchange", idx, f"exchange {exchange_id} no longer matches its "
                           f"AuditEvent (leaf {idx}): the exchange log or the leaf was edited",
                           exchange_id))


def _check_unaudited(conn: Connection, report: VerifyReport) -> None:
    first = conn.execute(select(func.min(_L.exchange_id))).scalar()
    if first is None:
        report.exchanges_before_trail = int(conn.execute(
            select(func.count()).select_from(ExchangeLog.__table__)).scalar_one())
        return
    report.exchanges_before_trail = int(conn.execute(select(func.count()).where(
        _X.id < first)).scalar_one())
    missing = conn.execute(
        select(_X.id).where(_X.id >= first, ~select(_L.idx).where(
            _L.exchange_id == _X.id).exists()).order_by(_X.id).limit(10)).scalars().all()
    for exchange_id in missing:
        near = conn.execute(select(func.min(_L.idx)).where(_L.exchange_id > exchange_id)
                            ).scalar()
        if near is None:  # its leaf would be after the last one
            near = conn.execute(select(func.coalesce(func.max(_L.idx) + 1, 0))).scalar()
        report.add(Finding("exchange", near, f"exchange {exchange_id} has no AuditEvent in the "
                           "log: it was written around the audit trail, or its leaf deleted",
                           int(exchange_id)))


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
