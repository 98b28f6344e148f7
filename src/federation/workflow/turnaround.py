"""Turnaround per site and department: how fast the owners of a workflow's tasks
acknowledge, complete and close them, and how many missed their time limit.

Figures for management (DESIGN §1 "statistics for management: referral turnaround").
Pure: it takes task rows and a clock.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from federation.workflow.records import TaskRow

__all__ = ["Turnaround", "by_owner", "by_urgency", "turnaround"]


@dataclass(frozen=True, slots=True)
class Turnaround:
    site_id: str
    department: str
    tasks: int
    open: int
    acknowledged: int
    completed: int
    closed_loop: int            # the result reached the requester
    escalated: int
    overdue_open: int           # still open past their complete-by time
    ack_median_min: float | None
    ack_p90_min: float | None
    complete_median_h: float | None
    close_median_h: float | None


def by_owner(row: TaskRow) -> tuple[str, str]:
    """The default line: the owner site and department."""
    return row.owner_site, row.owner_department or "—"


def by_urgency(row: TaskRow) -> tuple[str, str]:
    """One line per urgency for the whole consortium (``site_id`` "*", ``department`` the
    urgency): what the administrators' dashboard charts."""
    return "*", row.urgency


def turnaround(rows: Iterable[TaskRow], now: dt.datetime, *,
               closed_business: str = "closed",
               key: Callable[[TaskRow], tuple[str, str]] = by_owner) -> list[Turnaround]:
    """One line per ``key`` (owner site, department by default), sorted; minutes to
    acknowledge, hours to complete and to close the loop (medians), counted from
    creation."""
    groups: dict[tuple[str, str], list[TaskRow]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    out = []
    for (site, dept), tasks in sorted(groups.items()):
        ack = [_minutes(t.created_at, t.acknowledged_at) for t in tasks if t.acknowledged_at]
        done = [_minutes(t.created_at, t.completed_at) / 60 for t in tasks if t.completed_at]
        loop = [t for t in tasks if t.business_status == closed_business and t.closed_at]
        closing = [_minutes(t.created_at, t.closed_at) / 60 for t in loop]
        open_tasks = [t for t in tasks if t.closed_at is None]
        out.append(Turnaround(
            site_id=site, department=dept, tasks=len(tasks), open=len(open_tasks),
            acknowledged=len(ack), completed=len(done), closed_loop=len(loop),
            escalated=sum(1 for t in tasks if t.escalated_at is not None),
            overdue_open=sum(1 for t in open_tasks
                             if t.complete_due_at is not None and t.complete_due_at < now),
            ack_median_min=_median(ack), ack_p90_min=_p90(ack),
            complete_median_h=_median(done), close_median_h=_median(closing)))
    return out


def _minutes(start: dt.datetime, end: dt.datetime | None) -> float:
    assert end is not None
    return (end - start).total_seconds() / 60


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2)
