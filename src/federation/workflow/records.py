"""What the workflow store hands out and takes in: frozen rows and change descriptions.

A workflow (referral, consult) describes each move as a :class:`Change` — attribute
updates, FHIR resources to keep, messages for node inboxes, tasks to spawn — and the
store applies it in the transaction that holds the task's row lock. Messages are
written to the durable outbox (``work_item``) in that same transaction, so a move and
its messages commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from federation.store.models import WorkflowEvent, WorkflowTask
from federation.workflow.state import WorkflowState

__all__ = ["TaskRow", "EventRow", "Message", "Messages", "NewTask", "Change", "Spawn",
           "DeliveryRow", "NoticeRow", "TaskFilter", "KEEP"]


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: str
    workflow: str
    category: str
    status: str
    business_status: str
    version: int
    requester_site: str
    requester_user: str
    owner_site: str
    owner_department: str | None
    patient_id: str
    person_id: str | None
    urgency: str
    request_id: str | None
    based_on: str | None
    replaces: str | None
    attributes: Mapping[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    ack_due_at: dt.datetime | None
    complete_due_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    completed_at: dt.datetime | None
    closed_at: dt.datetime | None
    escalated_at: dt.datetime | None
    assignee: str | None = None     # ``<site>/<user>`` the task is assigned to, if anyone

    @classmethod
    def of(cls, m: WorkflowTask) -> TaskRow:
        return cls(
            m.task_id, m.workflow, m.category, m.status, m.business_status, m.version,
            m.requester_site, m.requester_user, m.owner_site, m.owner_department, m.patient_id,
            m.person_id, m.urgency, m.request_id, m.based_on, m.replaces,
            json.loads(m.attributes or "{}"), m.created_at, m.updated_at, m.ack_due_at,
            m.complete_due_at, m.acknowledged_at, m.completed_at, m.closed_at, m.escalated_at,
            m.assignee)

    def state(self, states: type[WorkflowState]) -> WorkflowState:
        return states.of(self.status, self.business_status)


@dataclass(frozen=True, slots=True)
class EventRow:
    version: int
    at: dt.datetime
    action: str
    from_status: str | None
    from_business: str | None
    to_status: str
    to_business: str
    actor: str
    actor_site: str | None
    note: str | None
    detail: Mapping[str, Any]

    @classmethod
    def of(cls, m: WorkflowEvent) -> EventRow:
        return cls(m.version, m.at, m.action, m.from_status, m.from_business, m.to_status,
                   m.to_business, m.actor, m.actor_site, m.note, json.loads(m.detail or "{}"))


@dataclass(frozen=True, slots=True)
class Message:
    """One work item for a site's node inbox (``kind``: referral | report | notice)."""

    site_id: str
    kind: str
    purpose: str            # packet | status | result | follow-up | note | escalation
    payload: bytes
    source_site: str | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    task_id: str
    workflow: str
    category: str
    state: WorkflowState
    requester_site: str
    requester_user: str
    owner_site: str
    owner_department: str | None
    patient_id: str
    person_id: str | None
    urgency: str
    request_id: str | None = None
    based_on: str | None = None
    replaces: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    ack_due_at: dt.datetime | None = None
    complete_due_at: dt.datetime | None = None


#: messages may need the task as it is after the move (its new version and state)
Messages = list[Message] | Callable[[TaskRow], list[Message]]


@dataclass(frozen=True, slots=True)
class Spawn:
    """A task created by a move (a redirect's new referral), with its first messages."""

    task: NewTask
    resources: Mapping[str, dict[str, Any]]
    messages: list[Message]
    note: str | None = None
    jobs: tuple[str, ...] = ()


#: a :class:`Change` that leaves the task's assignee as it is
KEEP = "<keep>"


@dataclass(frozen=True, slots=True)
class Change:
    """What one move writes. ``assignee``: the task's new assignee (``<site>/<user>``),
    None to unassign it, :data:`KEEP` to leave it."""

    assignee: str | None = KEEP
    attributes: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    messages: Messages = field(default_factory=list)
    note: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    spawn: tuple[Spawn, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A message of a task and how far it got: queued → delivered → acknowledged."""

    item_id: str
    version: int
    site_id: str
    kind: str
    purpose: str
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    acked_at: dt.datetime | None
    attempts: int


@dataclass(frozen=True, slots=True)
class NoticeRow:
    id: int
    task_id: str
    at: dt.datetime
    audience: str
    reason: str
    item_id: str | None


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """FHIR-search-like filters; each list is an OR, filters combine with AND."""

    statuses: tuple[str, ...] = ()
    business_statuses: tuple[str, ...] = ()
    owner_sites: tuple[str, ...] = ()
    requester_sites: tuple[str, ...] = ()
    person_ids: tuple[str, ...] = ()
    patient_ids: tuple[str, ...] = ()   # the FHIR Patient id at the requesting site
    task_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    urgencies: tuple[str, ...] = ()
    based_on: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()     # ``<site>/<user>``
    owner_departments: tuple[str, ...] = ()   # a referral's department, a consult's pool
    escalated: bool | None = None
    involving_site: str | None = None   # requester or owner (what a site may see)
