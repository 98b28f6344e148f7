"""The workflow store: tasks, their history, their resources and their outbox, over SQL.

Every move runs in one transaction that

1. locks the task's row (``SELECT … FOR UPDATE``; on SQLite writers are serialised by
   ``BEGIN IMMEDIATE``), so two staff accepting at once, or a cancel racing an accept,
   are decided one after the other: the second sees the first's state and gets
   :class:`~federation.errors.InvalidTransition` (or, when it named the version it saw,
   :class:`~federation.errors.ConcurrentUpdate`);
2. asks the workflow's :class:`~federation.workflow.state.TransitionTable` whether the
   principal may make the move;
3. writes the new state, one history event, the resources and the messages. Messages go
   to ``work_item`` — the node inboxes' durable outbox — in that same transaction:
   per-site ``seq`` commits in order (the site row is locked), and a referral's moves
   are serialised by its row lock, so a node receives one referral's messages in the
   order they happened, at least once, even across gateway restarts.

Nothing lives in memory: several gateway replicas can share one PostgreSQL. The time
limit sweep takes overdue tasks ``FOR UPDATE SKIP LOCKED``, so each escalation is
recorded once whichever replica finds it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from federation.errors import ConcurrentUpdate, InvalidInput, NotFound
from federation.security.principal import Principal
from federation.store.gateway_store import StoreSessions, insert_work_item, lock_sites
from federation.store.models import (
    WorkflowEvent,
    WorkflowJob,
    WorkflowMessage,
    WorkflowNotice,
    WorkflowResource,
    WorkflowTask,
    WorkItem,
)
from federation.workflow.records import (
    KEEP,
    Change,
    DeliveryRow,
    EventRow,
    Message,
    Messages,
    NewTask,
    NoticeRow,
    TaskFilter,
    TaskRow,
)
from federation.workflow.state import Actor, Milestone, Rule, TransitionTable, parties_of

__all__ = ["WorkflowStore", "Step", "SORTS"]

#: builds a move's Change from the task before it, the rule, and a resource loader
Builder = Callable[[TaskRow, Rule, Callable[[str], dict[str, Any] | None]], Change]
Step = tuple[str, Builder]
SORTS = {"-updated": col(WorkflowTask.updated_at).desc(), "updated": col(WorkflowTask.updated_at),
         "-created": col(WorkflowTask.created_at).desc(), "created": col(WorkflowTask.created_at)}
_MILESTONE_COLUMN = {Milestone.ACKNOWLEDGED: "acknowledged_at",
                     Milestone.COMPLETED: "completed_at", Milestone.CLOSED: "closed_at"}


class WorkflowStore(StoreSessions):
    """One store for every workflow; ``table`` arguments say whose rules apply."""

    # ------------------------------------------------------------------ create

    def create(self, new: NewTask, resources: Mapping[str, dict[str, Any]],
               messages: Messages, *, actor: Principal, now: dt.datetime,
               note: str | None = None, jobs: Sequence[str] = ()) -> tuple[TaskRow, bool]:
        """Store a new task with its first event, messages and the ``jobs`` the gateway
        then owes it. Idempotent on (requester site, ``request_id``): a repeat returns
        the first task and False."""
        if new.request_id:
            existing = self.by_request_id(new.requester_site, new.request_id)
            if existing is not None:
                return existing, False
        try:
            with self._write() as s:
                row = _insert_task(s, new, resources, messages, actor, now, note, jobs)
                return row, True
        except IntegrityError:
            existing = (self.by_request_id(new.requester_site, new.request_id)
                        if new.request_id else None)
            if existing is None:
                raise
            return existing, False

    def by_request_id(self, requester_site: str, request_id: str) -> TaskRow | None:
        with self._read() as s:
            found = s.execute(select(WorkflowTask).where(
                WorkflowTask.requester_site == requester_site,
                WorkflowTask.request_id == request_id)).first()
            return None if found is None else TaskRow.of(found[0])

    # ------------------------------------------------------------------ moves

    def act(self, task_id: str, steps: Sequence[Step], principal: Principal,
            table: TransitionTable | Callable[[str], TransitionTable], *, workflow: str,
            now: dt.datetime, expected_version: int | None = None,
            subject: str = "", guard: Callable[[Session, TaskRow], None] | None = None
            ) -> TaskRow:
        """Make one or more moves on a task in one transaction (all or nothing).
        ``table`` may be a function of the task's category (upward/downward …);
        ``guard`` runs in the transaction, the task locked, before any move: a check
        across tasks (a slot already booked) that must not race with another writer."""
        with self._write() as s:
            task = s.get(WorkflowTask, task_id, with_for_update=True, populate_existing=True)
            if task is None or task.workflow != workflow:
                raise NotFound(f"{workflow} '{task_id}' does not exist")
            if guard is not None:
                guard(s, TaskRow.of(task))
            if callable(table):
                table = table(task.category)
            subject = subject or f"{workflow} {task_id}"
            if expected_version is not None and expected_version != task.version:
                raise ConcurrentUpdate(
                    f"{subject or workflow + ' ' + task_id} changed meanwhile (it is at version {task.version}, "
                    f"you had version {expected_version}): reload it and decide again")
            actor = Actor(principal.describe(), parties_of(
                principal.kind, principal.site_id, principal.roles,
                requester_site=task.requester_site, owner_site=task.owner_site,
                actor_id=principal.actor_id, assignee=task.assignee), principal.roles)
            for action, build in steps:
                state = table.states.of(task.status, task.business_status)
                rule = table.transition(state, action, actor, subject=subject)
                change = build(TaskRow.of(task), rule, lambda name: _resource(s, task_id, name))
                _apply(s, task, rule, change, principal, now)
            return TaskRow.of(task)

    # ------------------------------------------------------------------ jobs

    def lease_jobs(self, workflow: str, kind: str, now: dt.datetime, *,
                   lease: dt.timedelta, limit: int = 20) -> list[tuple[str, int]]:
        """Take up to ``limit`` due jobs for ``lease`` (another replica skips them; a
        lease that runs out — the replica died — makes the job due again): their
        (task id, attempt number)."""
        due_now = (select(WorkflowJob)
                   .join(WorkflowTask, col(WorkflowTask.task_id) == col(WorkflowJob.task_id))
                   .where(WorkflowTask.workflow == workflow, WorkflowJob.kind == kind,
                          col(WorkflowJob.done_at).is_(None), col(WorkflowJob.due_at) <= now,
                          or_(col(WorkflowJob.leased_until).is_(None),
                              col(WorkflowJob.leased_until) < now)))
        # polled several times a second by every replica: look before taking the writer
        # (on SQLite one writer serves heartbeats, moves and the exchange log)
        with self._read() as s:
            if s.execute(due_now.limit(1)).first() is None:
                return []
        with self._write() as s:
            due = s.execute(
                due_now.order_by(col(WorkflowJob.due_at)).limit(limit)
                .with_for_update(skip_locked=True, of=WorkflowJob)
            ).scalars().all()
            for job in due:
                job.leased_until, job.attempts = now + lease, job.attempts + 1
            return [(job.task_id, job.attempts) for job in due]

    def finish_job(self, task_id: str, kind: str, *, action: str, now: dt.datetime,
                   resources: Mapping[str, dict[str, Any]],
                   messages: Callable[[TaskRow], list[Message]],
                   detail: Mapping[str, Any] | None = None) -> TaskRow | None:
        """Record a job's outcome on its (locked) task — one history event, resources and
        messages — and mark it done; None when it was done already (a lease ran out and
        another replica finished it) or the task has ended meanwhile (nothing is sent)."""
        with self._write() as s:
            task = s.get(WorkflowTask, task_id, with_for_update=True, populate_existing=True)
            job = s.get(WorkflowJob, (task_id, kind), with_for_update=True,
                        populate_existing=True)
            if task is None or job is None or job.done_at is not None:
                return None
            job.done_at, job.leased_until, job.last_error = now, None, None
            if task.closed_at is not None:
                return None
            task.version += 1
            task.updated_at = now
            _keep(s, task_id, resources, now)
            s.add(_event(task, action, task.status, task.business_status, "system", None, now,
                         None, detail or {}))
            s.flush()
            after = TaskRow.of(task)
            planned = messages(after)
            lock_sites(s, [m.site_id for m in planned])
            _emit(s, task, planned, now)
            return after

    def fail_job(self, task_id: str, kind: str, error: str, retry_at: dt.datetime) -> None:
        """The job failed this time: due again at ``retry_at``; ``error`` is kept (no
        patient data in it)."""
        with self._write() as s:
            job = s.get(WorkflowJob, (task_id, kind), with_for_update=True)
            if job is not None and job.done_at is None:
                job.last_error, job.leased_until, job.due_at = error[:300], None, retry_at

    def pending_jobs(self, task_id: str) -> list[tuple[str, int, str | None]]:
        """(kind, attempts, last error) of the task's unfinished jobs."""
        with self._read() as s:
            rows = s.execute(select(WorkflowJob).where(
                WorkflowJob.task_id == task_id, col(WorkflowJob.done_at).is_(None))).scalars()
            return [(j.kind, j.attempts, j.last_error) for j in rows]

    # ------------------------------------------------------------------ time limits

    def escalate_overdue(self, workflow: str, now: dt.datetime,
                         notices: Callable[[TaskRow], list[tuple[str, str, Message | None]]],
                         *, limit: int = 100) -> list[TaskRow]:
        """Escalate each task whose acknowledgement is overdue, once: flag, event, and
        the ``notices`` (audience, reason, message for a site's node or None)."""
        with self._write() as s:
            overdue = s.execute(
                select(WorkflowTask)
                .where(WorkflowTask.workflow == workflow,
                       col(WorkflowTask.acknowledged_at).is_(None),
                       col(WorkflowTask.closed_at).is_(None),
                       col(WorkflowTask.escalated_at).is_(None),
                       col(WorkflowTask.ack_due_at) < now)
                .order_by(col(WorkflowTask.ack_due_at))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).scalars().all()
            done = []
            for task in overdue:
                task.escalated_at = now
                task.version += 1
                task.updated_at = now
                after = TaskRow.of(task)
                planned = notices(after)
                messages = [m for _, _, m in planned if m is not None]
                lock_sites(s, [m.site_id for m in messages])
                item_ids = iter(_emit(s, task, messages, now))
                reasons = []
                for audience, reason, message in planned:
                    s.add(WorkflowNotice(task_id=task.task_id, at=now, audience=audience,
                                         reason=reason[:300],
                                         item_id=next(item_ids) if message else None))
                    reasons.append(audience)
                s.add(_event(task, "escalate", task.status, task.business_status, "system",
                             None, now, None, {"notified": reasons}))
                done.append(after)
            return done

    # ------------------------------------------------------------------ reading

    def get(self, task_id: str, workflow: str) -> TaskRow:
        with self._read() as s:
            task = s.get(WorkflowTask, task_id)
            if task is None or task.workflow != workflow:
                raise NotFound(f"{workflow} '{task_id}' does not exist")
            return TaskRow.of(task)

    def resources(self, task_id: str) -> dict[str, dict[str, Any]]:
        with self._read() as s:
            rows = s.execute(select(WorkflowResource).where(
                WorkflowResource.task_id == task_id)).scalars().all()
            return {r.name: json.loads(r.body) for r in rows}

    def resources_named(self, task_ids: Sequence[str], name: str) -> dict[str, dict[str, Any]]:
        """One named resource of each of several tasks (task id → resource)."""
        if not task_ids:
            return {}
        with self._read() as s:
            rows = s.execute(select(WorkflowResource).where(
                col(WorkflowResource.task_id).in_(list(task_ids)),
                WorkflowResource.name == name)).scalars().all()
            return {r.task_id: json.loads(r.body) for r in rows}

    def history(self, task_id: str) -> list[EventRow]:
        with self._read() as s:
            rows = s.execute(select(WorkflowEvent).where(WorkflowEvent.task_id == task_id)
                          .order_by(col(WorkflowEvent.version))).scalars().all()
            return [EventRow.of(r) for r in rows]

    def deliveries(self, task_id: str) -> list[DeliveryRow]:
        """Every message of the task with its delivery state, oldest first."""
        with self._read() as s:
            rows = s.execute(select(WorkflowMessage, WorkItem)
                          .join(WorkItem, col(WorkItem.item_id) == col(WorkflowMessage.item_id))
                          .where(WorkflowMessage.task_id == task_id)
                          .order_by(col(WorkItem.seq))).all()
            return [DeliveryRow(m.item_id, m.version, m.site_id, w.kind, m.purpose, w.created_at,
                                w.delivered_at, w.acked_at, w.attempts) for m, w in rows]

    def message(self, item_id: str) -> tuple[str, str, str] | None:
        """(task id, site, purpose) of a work item a workflow sent, or None."""
        with self._read() as s:
            m = s.get(WorkflowMessage, item_id)
            return None if m is None else (m.task_id, m.site_id, m.purpose)

    def notices(self, *, audience: str | None = None, limit: int = 100) -> list[NoticeRow]:
        query = select(WorkflowNotice).order_by(col(WorkflowNotice.id).desc()).limit(limit)
        if audience is not None:
            query = query.where(WorkflowNotice.audience == audience)
        with self._read() as s:
            return [NoticeRow(int(n.id or 0), n.task_id, n.at, n.audience, n.reason, n.item_id)
                    for n in s.execute(query).scalars().all()]

    def search(self, workflow: str, where: TaskFilter, *, offset: int = 0, limit: int = 20,
               sort: str = "-updated") -> tuple[list[TaskRow], int]:
        """A page of matching tasks and how many match in all."""
        return self._search(workflow, where, offset=offset, limit=limit, sort=sort,
                            count=True)

    def find(self, workflow: str, where: TaskFilter, *, limit: int = 20,
             sort: str = "-updated") -> list[TaskRow]:
        """The first ``limit`` matching tasks, without counting them all (the archive
        asks this on every read, for its care relationships)."""
        return self._search(workflow, where, offset=0, limit=limit, sort=sort,
                            count=False)[0]

    def _search(self, workflow: str, where: TaskFilter, *, offset: int, limit: int,
                sort: str, count: bool) -> tuple[list[TaskRow], int]:
        if sort not in SORTS:
            raise InvalidInput(f"sort must be one of {', '.join(SORTS)}")
        conditions = _conditions(workflow, where)
        with self._read() as s:
            rows = s.execute(select(WorkflowTask).where(*conditions)
                          .order_by(SORTS[sort], col(WorkflowTask.task_id))
                          .offset(offset).limit(limit)).scalars().all()
            total = s.execute(select(func.count()).select_from(WorkflowTask)
                              .where(*conditions)).scalar_one() if count else len(rows)
            return [TaskRow.of(r) for r in rows], int(total)

    def all_tasks(self, workflow: str, since: dt.datetime | None = None) -> list[TaskRow]:
        """Every task (created since ``since``), for turnaround reports."""
        query = select(WorkflowTask).where(WorkflowTask.workflow == workflow)
        if since is not None:
            query = query.where(col(WorkflowTask.created_at) >= since)
        with self._read() as s:
            return [TaskRow.of(r) for r in s.execute(query).scalars().all()]


# ---------------------------------------------------------------------------- internals


def _conditions(workflow: str, w: TaskFilter) -> list[Any]:
    t = WorkflowTask
    out: list[Any] = [t.workflow == workflow]
    for column, values in ((t.status, w.statuses), (t.business_status, w.business_statuses),
                           (t.owner_site, w.owner_sites), (t.requester_site, w.requester_sites),
                           (t.person_id, w.person_ids), (t.patient_id, w.patient_ids),
                           (t.task_id, w.task_ids),
                           (t.category, w.categories), (t.urgency, w.urgencies),
                           (t.based_on, w.based_on), (t.assignee, w.assignees),
                           (t.owner_department, w.owner_departments)):
        if values:
            out.append(col(column).in_(values))
    if w.escalated is not None:
        out.append(col(t.escalated_at).is_not(None) if w.escalated
                   else col(t.escalated_at).is_(None))
    if w.involving_site is not None:
        out.append(or_(t.requester_site == w.involving_site, t.owner_site == w.involving_site))
    return out


def _insert_task(s: Session, new: NewTask, resources: Mapping[str, dict[str, Any]],
                 messages: Messages, actor: Principal, now: dt.datetime,
                 note: str | None, jobs: Sequence[str] = ()) -> TaskRow:
    status, business = new.state.value
    task = WorkflowTask(
        task_id=new.task_id, workflow=new.workflow, category=new.category, status=str(status),
        business_status=business, version=1, requester_site=new.requester_site,
        requester_user=new.requester_user, owner_site=new.owner_site,
        owner_department=new.owner_department, patient_id=new.patient_id,
        person_id=new.person_id, urgency=new.urgency, request_id=new.request_id,
        based_on=new.based_on, replaces=new.replaces,
        attributes=json.dumps(dict(new.attributes), ensure_ascii=False), created_at=now,
        updated_at=now, ack_due_at=new.ack_due_at, complete_due_at=new.complete_due_at)
    s.add(task)
    s.flush()
    _keep(s, task.task_id, resources, now)
    s.add(_event(task, "create", None, None, actor.actor_id, actor.site_id, now, note, {}))
    for kind in jobs:
        s.add(WorkflowJob(task_id=task.task_id, kind=kind, due_at=now, attempts=0))
    row = TaskRow.of(task)
    _emit(s, task, messages(row) if callable(messages) else messages, now)
    return row


def _apply(s: Session, task: WorkflowTask, rule: Rule, change: Change, actor: Principal,
           now: dt.datetime) -> None:
    before = (task.status, task.business_status)
    task.status, task.business_status = str(rule.target.status), rule.target.business
    task.version += 1
    task.updated_at = now
    if change.assignee != KEEP:
        task.assignee = change.assignee
    for milestone in rule.marks:
        column = _MILESTONE_COLUMN[milestone]
        if getattr(task, column) is None:
            setattr(task, column, now)
    if change.attributes:
        merged = json.loads(task.attributes or "{}") | dict(change.attributes)
        task.attributes = json.dumps(merged, ensure_ascii=False)
    _keep(s, task.task_id, change.resources, now)
    s.add(_event(task, rule.action, before[0], before[1], actor.actor_id, actor.site_id, now,
                 change.note, change.detail))
    s.flush()
    after = TaskRow.of(task)
    messages = change.messages(after) if callable(change.messages) else change.messages
    lock_sites(s, [m.site_id for m in messages]
               + [m.site_id for sp in change.spawn for m in sp.messages])
    _emit(s, task, messages, now)
    for sp in change.spawn:
        _insert_task(s, sp.task, sp.resources, sp.messages, actor, now, sp.note, sp.jobs)


def _emit(s: Session, task: WorkflowTask, messages: Iterable[Message],
          now: dt.datetime) -> list[str]:
    """Queue messages in the outbox (work_item) and remember which task they belong to.
    Item ids are ``<task>.<version>.<n>``: a retried move cannot queue a second copy."""
    messages = list(messages)
    ids = [f"{task.task_id}.{task.version}.{n}" for n in range(1, len(messages) + 1)]
    for item_id, m in zip(ids, messages, strict=True):
        s.add(WorkflowMessage(item_id=item_id, task_id=task.task_id, version=task.version,
                              site_id=m.site_id, purpose=m.purpose, created_at=now))
    # written before the outbox rows: inserting one locks its site's row until the
    # commit, and other writers for that site queue behind it, so nothing else should
    # be left to write after the lock (bench/README.md, referral replicas)
    s.flush()
    for item_id, m in zip(ids, messages, strict=True):
        insert_work_item(s, m.site_id, m.kind, m.payload, source_site=m.source_site,
                         item_id=item_id)
    return ids


def _keep(s: Session, task_id: str, resources: Mapping[str, dict[str, Any]],
          now: dt.datetime) -> None:
    for name, body in resources.items():
        text = orjson.dumps(body).decode()        # a packet Bundle is tens of kilobytes
        row = s.get(WorkflowResource, (task_id, name))
        if row is None:
            s.add(WorkflowResource(task_id=task_id, name=name, body=text, updated_at=now))
        else:
            row.body, row.updated_at = text, now


def _resource(s: Session, task_id: str, name: str) -> dict[str, Any] | None:
    row = s.get(WorkflowResource, (task_id, name))
    return None if row is None else json.loads(row.body)


def _event(task: WorkflowTask, action: str, from_status: str | None, from_business: str | None,
           actor: str, actor_site: str | None, now: dt.datetime, note: str | None,
           detail: Mapping[str, Any]) -> WorkflowEvent:
    return WorkflowEvent(task_id=task.task_id, version=task.version, at=now, action=action,
                         from_status=from_status, from_business=from_business,
                         to_status=task.status, to_business=task.business_status,
                         actor=actor[:200], actor_site=actor_site, note=note,
                         detail=json.dumps(dict(detail), ensure_ascii=False))
