"""The consult's states and the one table of allowed moves (and who may make them).

States are FHIR Task status + businessStatus (FHIR R4 §12.1), on the same machinery as
the referral (:mod:`federation.workflow.state`). A request is addressed to a specialist
pool at a hub site (``owner_site`` + ``owner_department`` = the pool); any member may
claim it — the claim is the acknowledgement the time limit waits for — and from then on
the claimant (the task's *assignee*) carries it::

    requested ─claim→ claimed ─report→ reported ─ack→ closed
     │  ↺decline         │ ↺hand-over      ↺amend      │
     │                   ├─decline→ requested (back to the pool)
     │                   └─schedule→ scheduled ─start→ in-session ─end→ session-held
     │                                ↺hand-over                          └─report→ reported
     └─cancel→ cancelled (also from claimed and scheduled)            closed ─amend→ reported

Offline (store-and-forward, 离线会诊) consults go claimed → reported; interactive ones
(交互会诊) book a slot first (``schedule``), record the session's start and end, then
report. An amended report must be acknowledged again, so ``amend`` reopens a closed case.
Who acts: staff of the requesting site (REQUESTER), specialists of the hub site
(OWNER; the service also checks they are in the pool), the claimant (ASSIGNEE), a
regional administrator (ADMIN).
"""

from __future__ import annotations

from federation.workflow.state import (
    Milestone,
    Party,
    Rule,
    TaskStatus,
    TransitionTable,
    WorkflowState,
)

__all__ = ["ConsultState", "ACTIONS", "TABLE", "OPEN_STATES", "SPECIALISTS", "REQUESTERS"]


class ConsultState(WorkflowState):
    DRAFT = (TaskStatus.DRAFT, "draft")                      # before create; never stored
    REQUESTED = (TaskStatus.REQUESTED, "awaiting-claim")
    CLAIMED = (TaskStatus.ACCEPTED, "claimed")
    SCHEDULED = (TaskStatus.ACCEPTED, "scheduled")
    IN_SESSION = (TaskStatus.IN_PROGRESS, "in-session")
    SESSION_HELD = (TaskStatus.IN_PROGRESS, "session-held")
    REPORTED = (TaskStatus.COMPLETED, "reported")
    CLOSED = (TaskStatus.COMPLETED, "closed")
    CANCELLED = (TaskStatus.CANCELLED, "cancelled")


ACTIONS = ("create", "claim", "decline", "hand-over", "schedule", "start", "end", "report",
           "amend", "ack", "cancel")

S = ConsultState
_REQ, _OWN, _ASG, _ADMIN = Party.REQUESTER, Party.OWNER, Party.ASSIGNEE, Party.ADMIN
SPECIALISTS = frozenset({"specialist"})
REQUESTERS = frozenset({"doctor", "specialist"})
CANCELLERS = REQUESTERS | {"site-admin", "regional-admin"}
ACK, DONE, CLOSE = Milestone.ACKNOWLEDGED, Milestone.COMPLETED, Milestone.CLOSED
OPEN_STATES = (S.REQUESTED, S.CLAIMED, S.SCHEDULED, S.IN_SESSION, S.SESSION_HELD, S.REPORTED)


def _rule(source: S, action: str, target: S, parties: set[Party], roles: frozenset[str],
          *marks: Milestone) -> Rule:
    return Rule(source, action, target, frozenset(parties), roles, frozenset(marks))


_RULES = [
    _rule(S.DRAFT, "create", S.REQUESTED, {_REQ}, REQUESTERS),
    _rule(S.REQUESTED, "claim", S.CLAIMED, {_OWN}, SPECIALISTS, ACK),
    # a pool member who will not take it says so (it stays with the pool) …
    _rule(S.REQUESTED, "decline", S.REQUESTED, {_OWN}, SPECIALISTS),
    # … and a claimant who cannot carry on gives it back to the pool
    _rule(S.CLAIMED, "decline", S.REQUESTED, {_ASG}, SPECIALISTS),
    *(_rule(s, "hand-over", s, {_ASG, _ADMIN}, SPECIALISTS | {"regional-admin"})
      for s in (S.CLAIMED, S.SCHEDULED)),
    _rule(S.CLAIMED, "schedule", S.SCHEDULED, {_ASG}, SPECIALISTS),
    _rule(S.SCHEDULED, "start", S.IN_SESSION, {_ASG}, SPECIALISTS),
    _rule(S.IN_SESSION, "end", S.SESSION_HELD, {_ASG}, SPECIALISTS),
    *(_rule(s, "report", S.REPORTED, {_ASG}, SPECIALISTS, DONE)
      for s in (S.CLAIMED, S.SESSION_HELD)),
    *(_rule(s, "amend", S.REPORTED, {_ASG}, SPECIALISTS) for s in (S.REPORTED, S.CLOSED)),
    _rule(S.REPORTED, "ack", S.CLOSED, {_REQ}, REQUESTERS | {"nurse"}, CLOSE),
    *(_rule(s, "cancel", S.CANCELLED, {_REQ, _ADMIN}, CANCELLERS, CLOSE)
      for s in (S.REQUESTED, S.CLAIMED, S.SCHEDULED)),
]

#: the consult's one table of allowed moves
TABLE = TransitionTable("consult", ConsultState, ACTIONS, _RULES)
