"""The node's own copy of its audit receipts and the gateway's signed tree heads.

Kept in ``<state_dir>/receipts.sqlite`` next to the inbox, and only ever appended to:
they are the node's evidence, independent of the gateway's store, that the exchanges it
took part in were logged — and of what the gateway signed. A receipt is stored only after
it verified (:mod:`federation.audit.receipts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from federation.audit.log import TreeHead

__all__ = ["NodeReceipts", "StoredReceipt"]

_meta = MetaData()
_heads = Table(
    "tree_head", _meta,
    Column("tree_size", BigInteger, primary_key=True),
    Column("root_hash", LargeBinary, nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("signer_cert", Text, nullable=False),
)
_receipts = Table(
    "receipt", _meta,
    Column("leaf_index", BigInteger, primary_key=True),
    Column("leaf", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("tree_size", BigInteger, nullable=False),   # the tree head it was proven in
    Column("audit_path", LargeBinary, nullable=False),  # 32 bytes per hash
    Column("path_len", Integer, nullable=False),
)

_cursor = Table(
    "fetch_cursor", _meta,
    Column("id", Integer, primary_key=True),
    Column("next_leaf", BigInteger, nullable=False),
)


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    leaf_index: int
    leaf: bytes
    leaf_hash: bytes
    tree_size: int
    audit_path: list[bytes]


class NodeReceipts:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
        event.listen(self._engine, "connect", _pragmas)
        _meta.create_all(self._engine)

    def keep(self, sth: TreeHead, receipts: list[StoredReceipt], next_leaf: int) -> int:
        """Store a verified tree head, its receipts and where the next fetch starts, in
        one transaction; returns the receipts new here."""
        with self._engine.begin() as conn:
            conn.execute(sqlite_insert(_cursor).values(id=1, next_leaf=next_leaf)
                         .on_conflict_do_update(index_elements=["id"],
                                                set_={"next_leaf": next_leaf}))
            conn.execute(sqlite_insert(_heads).values(
                tree_size=sth.tree_size, root_hash=sth.root_hash, timestamp_ms=sth.timestamp_ms,
                signature=sth.signature, signer_cert=sth.signer_cert,
            ).on_conflict_do_nothing(index_elements=["tree_size"]))
            new = 0
            for r in receipts:
                new += conn.execute(sqlite_insert(_receipts).values(
                    leaf_index=r.leaf_index, leaf=r.leaf, leaf_hash=r.leaf_hash,
                    tree_size=r.tree_size, audit_path=b"".join(r.audit_path),
                    path_len=len(r.audit_path),
                ).on_conflict_do_nothing(index_elements=["leaf_index"])).rowcount
            return new

    def tree_heads(self) -> list[TreeHead]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_heads).order_by(_heads.c.tree_size)).all()
        return [TreeHead(r.tree_size, bytes(r.root_hash), r.timestamp_ms, bytes(r.signature),
                         r.signer_cert) for r in rows]

    def latest_tree_head(self) -> TreeHead | None:
        heads = self.tree_heads()
        return heads[-1] if heads else None

    def receipts(self) -> list[StoredReceipt]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_receipts).order_by(_receipts.c.leaf_index)).all()
        return [StoredReceipt(r.leaf_index, bytes(r.leaf), bytes(r.leaf_hash), r.tree_size,
                              [bytes(r.audit_path)[i:i + 32] for i in range(0, 32 * r.path_len, 32)])
                for r in rows]

    def next_leaf(self) -> int:
        """Where the next fetch starts."""
        with self._engine.connect() as conn:
            value = conn.execute(select(_cursor.c.next_leaf).where(_cursor.c.id == 1)).scalar()
        return int(value or 0)

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_receipts)).scalar_one())

    def close(self) -> None:
        self._engine.dispose()


def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
