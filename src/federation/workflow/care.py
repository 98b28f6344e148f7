"""Workflows as sources of care relationships and care episodes for the regional archive.

A referral or consult ties two sites to one person: the site that asked and the site the
task is addressed to. While it is open each of them has a **care episode** with the
person (critical-result alerts reach them, :mod:`federation.archive.alerts`), and while it
is open or closed no longer ago than the archive's care window each has a **care
relationship** (the archive lets them read the person's record across sites,
:mod:`federation.archive.access`). One implementation serves every workflow; each
workflow registers it for its own name (:func:`register_workflow`).
"""

from __future__ import annotations

import datetime as dt

from federation.archive.care import (
    CareContext,
    CareEpisode,
    register_care_source,
    register_episode_source,
)
from federation.workflow.records import TaskFilter, TaskRow
from federation.workflow.store import WorkflowStore

__all__ = ["OPEN_STATUSES", "WorkflowCare", "WorkflowEpisodes", "register_workflow"]

#: FHIR Task statuses of a task still under way
OPEN_STATUSES = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")
#: a person's tasks looked at per question (a person has few; a cap keeps it one query)
_LIMIT = 200


def _tasks(store: WorkflowStore, workflow: str, person_id: str,
           statuses: tuple[str, ...] = (), site_id: str | None = None) -> list[TaskRow]:
    return store.find(workflow, TaskFilter(person_ids=(person_id,), statuses=statuses,
                                           involving_site=site_id),
                      limit=_LIMIT, sort="-updated")


class WorkflowCare:
    """Both sites of a task that is open, or completed within the care window, care for
    the person (a rejected or cancelled one gives the target site nothing)."""

    def __init__(self, ctx: CareContext, workflow: str) -> None:
        self._ctx, self._workflow = ctx, workflow
        self._store = WorkflowStore(ctx.engine)

    def sites_caring_for(self, person_id: str) -> set[str]:
        return self._caring(person_id)

    def cares(self, person_id: str, site_id: str) -> bool:
        return site_id in self._caring(person_id, site_id)

    def _caring(self, person_id: str, site_id: str | None = None) -> set[str]:
        since = self._ctx.now() - dt.timedelta(days=self._ctx.window_days)
        sites: set[str] = set()
        for t in _tasks(self._store, self._workflow, person_id, site_id=site_id):
            ended = t.closed_at or t.completed_at
            if t.status in OPEN_STATUSES or (
                    t.status == "completed" and ended is not None and ended >= since):
                sites |= {t.requester_site, t.owner_site}
        return sites


class WorkflowEpisodes:
    """Each open task is an episode at both of its sites."""

    def __init__(self, ctx: CareContext, workflow: str) -> None:
        self._workflow = workflow
        self._store = WorkflowStore(ctx.engine)

    def open_episodes(self, person_id: str) -> list[CareEpisode]:
        out = []
        for t in _tasks(self._store, self._workflow, person_id, OPEN_STATUSES):
            clinicians = tuple(c for c in (t.requester_user,) if c)
            out.append(CareEpisode(t.requester_site, self._workflow, f"Task/{t.task_id}",
                                   clinicians))
            out.append(CareEpisode(t.owner_site, self._workflow, f"Task/{t.task_id}"))
        return out


def register_workflow(workflow: str) -> None:
    """Make ``workflow``'s tasks count for the archive's access and alerts (one call per
    workflow, at import of its package)."""
    register_care_source(lambda ctx: WorkflowCare(ctx, workflow))
    register_episode_source(lambda ctx: WorkflowEpisodes(ctx, workflow))
