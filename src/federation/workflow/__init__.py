"""The machinery every cross-site workflow shares (two-way referral now, remote
consultation next): a FHIR Task state machine core, the durable outbox to node inboxes,
time limits with escalation, turnaround figures, and the store of tasks and their history.

* :mod:`.state` — Task status + businessStatus, transition tables, who may move (pure);
* :mod:`.timelimits` — time limits per urgency and escalation audiences (pure, data);
* :mod:`.turnaround` — turnaround per site and department (pure);
* :mod:`.records` — rows and change descriptions;
* :mod:`.store` — tasks, history, resources, outbox messages, notices (SQL).

A workflow package (``federation.referral``) supplies its states, its table, its data
file and the FHIR it builds; it never writes the tables or the outbox itself.
"""

from federation.workflow.records import (
    Change,
    DeliveryRow,
    EventRow,
    Message,
    NewTask,
    NoticeRow,
    Spawn,
    TaskFilter,
    TaskRow,
)
from federation.workflow.state import (
    Actor,
    Milestone,
    Party,
    Rule,
    TaskStatus,
    TransitionTable,
    WorkflowState,
    parties_of,
)
from federation.workflow.store import WorkflowStore
from federation.workflow.timelimits import TimeLimit, TimeLimits, parse_duration

__all__ = [
    "Actor", "Change", "DeliveryRow", "EventRow", "Message", "Milestone", "NewTask",
    "NoticeRow", "Party", "Rule", "Spawn", "TaskFilter", "TaskRow", "TaskStatus", "TimeLimit",
    "TimeLimits", "TransitionTable", "WorkflowState", "WorkflowStore", "parse_duration",
    "parties_of",
]
