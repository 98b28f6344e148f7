"""The operations view of the store: what monitoring needs, read in one short transaction.

Every figure here is computed from the shared database, never from a replica's memory,
so each of several gateway replicas answers a Prometheus scrape with the same
consortium-wide numbers (and a replica that just started knows them at once). The
queries are aggregates over indexed columns or small tables (one row per site), cheap
enough to run on every scrape.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from federation.store.database import read_only
from federation.store.models import FeedCursor, IdentityReview, Node, Site, WorkItem

__all__ = ["SiteOps", "OpsSnapshot", "operations_snapshot"]


@dataclass(frozen=True, slots=True)
class SiteOps:
    site_id: str
    tier: str
    node_state: str | None                    # None: no node ever registered
    heartbeat_age_s: float | None
    sync_behind: int | None                   # changes in the node's feed not yet pulled
    sync_lag_s: float | None                  # 0 when caught up, else since last caught up
    last_pull_age_s: float | None
    inbox_pending: int = 0                    # work items not yet acknowledged by the node
    inbox_oldest_s: float = 0.0


@dataclass(frozen=True, slots=True)
class OpsSnapshot:
    at: dt.datetime
    sites: tuple[SiteOps, ...]
    review_open: int
    review_oldest_s: float


def _age(now: dt.datetime, then: dt.datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - _aware(then)).total_seconds())


def _aware(value: dt.datetime) -> dt.datetime:
    # aggregate functions (min) bypass the column type: SQLite hands back naive UTC
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def operations_snapshot(engine: Engine, now: dt.datetime | None = None) -> OpsSnapshot:
    now = now or dt.datetime.now(dt.UTC)
    with Session(read_only(engine)) as s, s.begin():
        # plain column tuples, not ORM objects: thousands of sites on every scrape
        sites = s.execute(select(Site.site_id, Site.tier).order_by(Site.site_id)).all()
        nodes = {r[0]: r[1:] for r in s.execute(
            select(Node.site_id, Node.state, Node.last_heartbeat_at))}
        cursors = {r[0]: r[1:] for r in s.execute(select(
            FeedCursor.site_id, FeedCursor.after, FeedCursor.node_head,
            FeedCursor.caught_up_at, FeedCursor.last_pull_at))}
        pending = {r[0]: (r[1], r[2]) for r in s.execute(
            select(WorkItem.site_id, func.count(), func.min(WorkItem.created_at))
            .where(col(WorkItem.acked_at).is_(None)).group_by(WorkItem.site_id))}
        review_open, review_oldest = s.execute(
            select(func.count(), func.min(IdentityReview.created_at))
            .where(col(IdentityReview.status) == "open")).one()
    rows = []
    for site_id, tier in sites:
        node, cursor = nodes.get(site_id), cursors.get(site_id)
        count, oldest = pending.get(site_id, (0, None))
        behind = lag = pull_age = None
        if cursor is not None:
            after, head, caught_up_at, last_pull_at = cursor
            behind = max(0, head - after)
            lag = 0.0 if behind == 0 else _age(now, caught_up_at or last_pull_at)
            pull_age = _age(now, last_pull_at)
        rows.append(SiteOps(
            site_id=site_id, tier=tier, node_state=node[0] if node else None,
            heartbeat_age_s=_age(now, node[1]) if node else None,
            sync_behind=behind, sync_lag_s=lag, last_pull_age_s=pull_age,
            inbox_pending=int(count), inbox_oldest_s=_age(now, oldest) or 0.0))
    return OpsSnapshot(now, tuple(rows), int(review_open or 0),
                       _age(now, review_oldest) or 0.0)
