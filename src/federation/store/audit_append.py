"""Appending AuditEvents to the Merkle log, inside the caller's transaction.

:func:`append_exchanges` runs in the transaction that writes the exchange-log rows, so an
exchange is never recorded without its AuditEvent or the other way round:

1. the log head (``audit_head``, one row) is locked ``FOR UPDATE`` — on PostgreSQL this
   serialises leaf numbering across gateway replicas; SQLite's ``BEGIN IMMEDIATE``
   already has — and the next indexes are taken from its ``tree_size``;
2. each row's AuditEvent is rendered with its index and hashed (``SHA-256(0x00 ‖ leaf)``);
3. the head's compact range (:class:`~federation.audit.merkle.Frontier`) absorbs the new
   leaf hashes; every perfect subtree of 2**4, 2**8, 2**12 … leaves this completes is stored as
   a *tile* (``audit_tile``), so nothing ever re-reads old leaves to append or prove;
4. leaves, tiles and the nodes that took part (``audit_party``) are bulk-inserted and the
   head is written back (size, root, frontier) — on PostgreSQL in one statement.

The exchange rows are written before the head is locked, and the lock is held only to
the commit: three round trips on PostgreSQL (lock, write, commit), since every writer of
every replica queues on that row. This module imports no store sessions, so the store can call it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from federation.audit.events import audit_event, canonical, parties
from federation.audit.merkle import Frontier, leaf_hash
from federation.store.models import AuditHead, ExchangeEntry

__all__ = ["HEAD_ID", "TILE_LEVELS", "append_exchanges"]

#: subtrees stored as tiles are those of 2**level leaves, level a multiple of this
TILE_LEVELS = 4
HEAD_ID = 1


_H = AuditHead.__table__.c
#: built once: compiling these per append cost more than running them
_SELECT_HEAD = select(_H.tree_size, _H.frontier).where(_H.id == HEAD_ID).with_for_update()
_UPDATE_HEAD = update(AuditHead.__table__).where(_H.id == HEAD_ID)
_COLUMNS = {"audit_leaf": ("idx", "exchange_id", "leaf", "leaf_hash"),
            "audit_tile": ("level", "idx", "hash"), "audit_party": ("site_id", "leaf_idx")}


def _insert_many(conn: Connection, table: str, rows: list[tuple[object, ...]]) -> None:
    """A plain DB-API ``executemany``: these columns need no type conversion, and the
    per-row parameter processing of a Core insert was a third of the append's cost."""
    columns = _COLUMNS[table]
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) "
                         f"VALUES ({', '.join([mark] * len(columns))})", rows)


def _lock_head(conn: Connection) -> tuple[int, bytes]:
    row = conn.execute(_SELECT_HEAD).first()
    if row is None:  # a database migrated before the head row was seeded
        stmt = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
            AuditHead.__table__)
        conn.execute(stmt.values(
            id=HEAD_ID, tree_size=0, root_hash=Frontier().root(), frontier=b"",
            updated_at=dt.datetime.now(dt.UTC)).on_conflict_do_nothing(index_elements=["id"]))
        row = conn.execute(_SELECT_HEAD).one()
    return int(row.tree_size), bytes(row.frontier)


def append_exchanges(conn: Connection, logged: Sequence[tuple[ExchangeEntry, int | None]]
                     ) -> list[int]:
    """Append one AuditEvent per (entry, exchange-log id) in the connection's transaction;
    returns their leaf indexes."""
    if not logged:
        return []
    first, packed = _lock_head(conn)
    frontier = Frontier.unpack(first, packed)
    leaves, tiles, party_rows = [], [], []

    def tile(level: int, index: int, h: bytes) -> None:
        if level % TILE_LEVELS == 0:
            tiles.append((level, index, h))

    for i, (entry, exchange_id) in enumerate(logged):
        idx = first + i
        data = canonical(audit_event(entry, exchange_id, idx))
        lh = leaf_hash(data)
        frontier.append(lh, tile)
        leaves.append((idx, exchange_id, data, lh))
        party_rows += [(site, idx) for site in sorted(parties(entry))]
    head = {"tree_size": frontier.size, "root_hash": frontier.root(),
            "frontier": frontier.pack(), "updated_at": dt.datetime.now(dt.UTC)}
    if conn.dialect.name == "postgresql":
        _write_all_pg(conn, leaves, tiles, party_rows, head)
        return list(range(first, frontier.size))
    _insert_many(conn, "audit_leaf", leaves)
    if tiles:
        _insert_many(conn, "audit_tile", tiles)
    if party_rows:
        _insert_many(conn, "audit_party", party_rows)
    conn.execute(_UPDATE_HEAD, head)
    return list(range(first, frontier.size))


#: leaves, tiles, parties and the new head in one statement: the head's row lock is held
#: from :func:`_lock_head` to the commit and every writer of every replica queues on it,
#: so the locked stretch is three round trips (lock, this, commit), not five or six —
#: each round trip waits for a busy client process to be scheduled again (bench/README.md)
_WRITE_ALL_PG = (
    "WITH leaf AS (INSERT INTO audit_leaf (idx, exchange_id, leaf, leaf_hash) "
    "  SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bytea[], %s::bytea[])), "
    "tile AS (INSERT INTO audit_tile (level, idx, hash) "
    "  SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::bytea[])), "
    "party AS (INSERT INTO audit_party (site_id, leaf_idx) "
    "  SELECT * FROM unnest(%s::varchar[], %s::bigint[])) "
    "UPDATE audit_head SET tree_size = %s, root_hash = %s, frontier = %s, updated_at = %s "
    f"WHERE id = {HEAD_ID}")


def _columns(rows: list[tuple[object, ...]], width: int) -> list[list[object]]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _write_all_pg(conn: Connection, leaves: list[tuple[object, ...]],
                  tiles: list[tuple[object, ...]], party_rows: list[tuple[object, ...]],
                  head: dict[str, object]) -> None:
    params = (*_columns(leaves, 4), *_columns(tiles, 3), *_columns(party_rows, 2),
              head["tree_size"], head["root_hash"], head["frontier"], head["updated_at"])
    conn.exec_driver_sql(_WRITE_ALL_PG, params)
