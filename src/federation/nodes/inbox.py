"""The node's own inbox: inbound work items land here for the site's staff and systems.

A node never writes to the site's clinical systems. Items are stored once per item id
(the gateway delivers at least once), before they are acknowledged to the gateway.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

__all__ = ["NodeInbox", "InboxItem"]

_meta = MetaData()
_inbox = Table(
    "inbox", _meta,
    Column("item_id", String(64), primary_key=True),
    Column("sequence", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("source_site", String(64)),
    Column("content_type", String(64), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True, slots=True)
class InboxItem:
    item_id: str
    sequence: int
    kind: str
    source_site: str | None
    content_type: str
    payload: bytes
    received_at: dt.datetime


class NodeInbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
        event.listen(self._engine, "connect", _pragmas)
        _meta.create_all(self._engine)

    def store(self, item: InboxItem) -> bool:
        """Keep ``item``; False when it was already here (a redelivery)."""
        stmt = sqlite_insert(_inbox).values(
            item_id=item.item_id, sequence=item.sequence, kind=item.kind,
            source_site=item.source_site, content_type=item.content_type,
            payload=item.payload, received_at=item.received_at,
        ).on_conflict_do_nothing(index_elements=["item_id"])
        with self._engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def items(self) -> list[InboxItem]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_inbox).order_by(_inbox.c.sequence)).all()
        return [InboxItem(**row._mapping) for row in rows]

    def last_sequence(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(_inbox.c.sequence), 0))).scalar())

    def close(self) -> None:
        self._engine.dispose()


def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


