"""Factories for the audit tests: valid exchange-log entries, and the rewrite a thorough
attacker with database access would do."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, text

from federation.audit.log import AuditLog
from federation.audit.merkle import Frontier
from federation.store import ExchangeEntry
from federation.store.audit_append import TILE_LEVELS

T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)


def exchange(i: int = 0, **over: object) -> ExchangeEntry:
    """A valid exchange-log entry; ``i`` varies it, keywords override fields."""
    fields: dict[str, object] = dict(
        at=T0 + dt.timedelta(seconds=i), correlation_id=f"corr-{i}", requester_kind="node",
        requester_id="county-a", requester_site="county-a", target_site="city-1",
        operation="Gateway/ResolvePatient", purpose="TREAT", patient_ref=f"{i:032x}",
        outcome="ok", status_code="OK", detail="", records=1, duration_ms=1.5)
    return ExchangeEntry(**(fields | over))  # type: ignore[arg-type]


def rebuild_derived(log: AuditLog, engine: Engine) -> None:
    """What a thorough attacker does: recompute tiles and head from the (edited) leaves."""
    leaves = log.leaves(0, 10**9)
    frontier, tiles = Frontier(), []
    for leaf in leaves:
        frontier.append(leaf.leaf_hash, lambda lv, i, h: tiles.append((lv, i, h)) if lv % TILE_LEVELS == 0
                        else None)
    _sql(engine, "DELETE FROM audit_tile")
    for level, index, h in tiles:
        _sql(engine, "INSERT INTO audit_tile (level, idx, hash) VALUES (:l, :i, :h)",
              l=level, i=index, h=h)
    _sql(engine, "UPDATE audit_head SET tree_size = :n, root_hash = :r, frontier = :f, "
          "updated_at = :t", n=frontier.size, r=frontier.root(), f=frontier.pack(),
          t=dt.datetime.now(dt.UTC))


def _sql(engine: Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)
