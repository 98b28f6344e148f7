"""The core of every workflow: FHIR Task states, an explicit transition table, and one
pure :func:`TransitionTable.transition` that every caller goes through.

A workflow (referral, consultation) declares its states as a :class:`WorkflowState` enum
whose values are (FHIR Task.status, Task.businessStatus code) pairs — FHIR R4 §12.1
"Task state machine": ``status`` is the generic life cycle every FHIR system
understands, ``businessStatus`` the workflow's finer stage. It then lists its
:class:`Rule` s: from which state an action leads where, which party to the task may
take it (the requesting site, the owning site, the gateway itself, a regional
administrator) and which staff roles. Who acts is thereby data, not code.

Anything not in the table is illegal: :class:`~federation.errors.InvalidTransition`
naming the state, the action and what is allowed now. The right move by the wrong
party or role is :class:`~federation.errors.PermissionDenied`. No I/O here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from federation.errors import InvalidTransition, PermissionDenied

__all__ = [
    "TaskStatus",
    "WorkflowState",
    "Party",
    "Milestone",
    "Rule",
    "Actor",
    "TransitionTable",
    "parties_of",
]


class TaskStatus(enum.StrEnum):
    """FHIR R4 ``task-status`` (http://hl7.org/fhir/task-status)."""

    DRAFT = "draft"
    REQUESTED = "requested"
    RECEIVED = "received"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    READY = "ready"
    CANCELLED = "cancelled"
    IN_PROGRESS = "in-progress"
    ON_HOLD = "on-hold"
    FAILED = "failed"
    COMPLETED = "completed"
    ENTERED_IN_ERROR = "entered-in-error"


class WorkflowState(enum.Enum):
    """Base of a workflow's states: each value is ``(TaskStatus, businessStatus code)``."""

    @property
    def status(self) -> TaskStatus:
        return self.value[0]

    @property
    def business(self) -> str:
        return self.value[1]

    @classmethod
    def of(cls, status: str, business: str) -> WorkflowState:
        for state in cls:
            if state.value == (TaskStatus(status), business):
                return state
        raise ValueError(f"no {cls.__name__} has status {status!r} and business status "
                         f"{business!r}")


class Party(enum.StrEnum):
    """How an actor relates to one task."""

    REQUESTER = "requester"  # staff of the site that asked
    OWNER = "owner"          # staff of the site the task is addressed to
    ASSIGNEE = "assignee"    # the member of staff the task is assigned to (a consult's claimant)
    ADMIN = "admin"          # a regional administrator, whatever their site
    SYSTEM = "system"        # the gateway itself (timers, a node's receipt)


class Milestone(enum.StrEnum):
    """Moments the store timestamps for turnaround reports and time limits."""

    ACKNOWLEDGED = "acknowledged"  # the owner triaged it (accepted, rejected, redirected)
    COMPLETED = "completed"        # the owner finished with a result
    CLOSED = "closed"              # the loop closed: the requester has the result, or it ended


@dataclass(frozen=True, slots=True)
class Rule:
    source: WorkflowState
    action: str
    target: WorkflowState
    parties: frozenset[Party]
    roles: frozenset[str] = frozenset()      # staff roles; ignored for SYSTEM
    marks: frozenset[Milestone] = frozenset()


@dataclass(frozen=True, slots=True)
class Actor:
    """An actor as the table sees it: their parties to the task and their staff roles."""

    name: str
    parties: frozenset[Party]
    roles: frozenset[str] = field(default_factory=frozenset)


def parties_of(kind: str, site_id: str | None, roles: Iterable[str], *,
               requester_site: str, owner_site: str | None, actor_id: str | None = None,
               assignee: str | None = None) -> frozenset[Party]:
    """Which parties an actor of ``kind`` at ``site_id`` is to a task between these sites
    (and the task's ``assignee`` when ``actor_id`` — ``<site>/<user>`` — is theirs)."""
    if kind == "system":
        return frozenset({Party.SYSTEM})
    parties = set()
    if assignee is not None and actor_id == assignee:
        parties.add(Party.ASSIGNEE)
    if site_id is not None and site_id == requester_site:
        parties.add(Party.REQUESTER)
    if site_id is not None and site_id == owner_site:
        parties.add(Party.OWNER)
    if "regional-admin" in roles:
        parties.add(Party.ADMIN)
    return frozenset(parties)


class TransitionTable:
    """One workflow's allowed moves. Build it once at import; it checks itself."""

    def __init__(self, name: str, states: type[WorkflowState], actions: Iterable[str],
                 rules: Iterable[Rule]) -> None:
        self.name = name
        self.states = states
        self.actions = tuple(actions)
        self._rules: dict[tuple[WorkflowState, str], Rule] = {}
        for rule in rules:
            if rule.action not in self.actions:
                raise ValueError(f"{name}: unknown action {rule.action!r}")
            if not isinstance(rule.source, states) or not isinstance(rule.target, states):
                raise ValueError(f"{name}: a rule for {rule.action!r} uses a foreign state")
            key = (rule.source, rule.action)
            if key in self._rules:
                raise ValueError(f"{name}: two rules for {rule.action!r} from {rule.source.name}")
            self._rules[key] = rule

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    def allowed(self, state: WorkflowState) -> list[str]:
        """The actions the table allows from ``state`` (for anyone)."""
        return [a for a in self.actions if (state, a) in self._rules]

    def permitted(self, state: WorkflowState, actor: Actor) -> list[str]:
        """The actions ``actor`` may take from ``state``: what a person's screen offers,
        decided by the same :meth:`transition` that checks the move itself."""
        out = []
        for action in self.allowed(state):
            try:
                self.transition(state, action, actor)
            except PermissionDenied:
                continue
            out.append(action)
        return out

    def rule(self, state: WorkflowState, action: str, *, subject: str = "") -> Rule:
        """The rule for ``action`` in ``state``, or :class:`InvalidTransition`."""
        if action not in self.actions:
            raise InvalidTransition(f"'{action}' is not a {self.name} action; actions are "
                                    f"{', '.join(self.actions)}")
        found = self._rules.get((state, action))
        if found is None:
            what = subject or f"a {self.name}"
            now = self.allowed(state)
            hint = (f"allowed now: {', '.join(now)}" if now
                    else "nothing more can be done to it")
            raise InvalidTransition(
                f"cannot {action} {what}: it is {_label(state)}; {hint}")
        return found

    def transition(self, state: WorkflowState, action: str, actor: Actor, *,
                   subject: str = "") -> Rule:
        """Check that ``actor`` may take ``action`` in ``state``; the rule says where to.

        Raises :class:`InvalidTransition` for a move the table lacks and
        :class:`PermissionDenied` for a party or staff role the rule does not name.
        """
        rule = self.rule(state, action, subject=subject)
        what = subject or f"this {self.name}"
        common = rule.parties & actor.parties
        if not common:
            raise PermissionDenied(
                f"{actor.name} may not {action} {what}: only "
                f"{' or '.join(_party_label(p) for p in sorted(rule.parties))} may")
        if common != {Party.SYSTEM} and rule.roles and not (rule.roles & actor.roles):
            raise PermissionDenied(
                f"{actor.name} may not {action} {what}: it needs the staff role "
                f"{' or '.join(sorted(rule.roles))}")
        return rule


def _label(state: WorkflowState) -> str:
    status, business = state.value
    return str(status) if business == str(status) else f"{status} ({business})"


def _party_label(party: Party) -> str:
    return {Party.REQUESTER: "staff of the requesting site",
            Party.OWNER: "staff of the site it is addressed to",
            Party.ASSIGNEE: "the member of staff it is assigned to",
            Party.ADMIN: "a regional administrator",
            Party.SYSTEM: "the gateway"}[party]
