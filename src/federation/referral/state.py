"""The referral's states and the one table of allowed moves (and who may make them).

States are FHIR Task status + businessStatus (FHIR R4 §12.1); the loop closes in the
spirit of IHE 360X (Closed Loop Referral): a referral is finished only when the result
is back with the requester (``completed`` / ``closed``), not when the target says it is
done (``completed`` / ``result-sent``)::

    requested ─accept→ accepted ─book→ booked ─start→ in-progress ─complete→ result-sent
        │                 │  ↖book─ no-show ←no-show─┘                            │
        ├─reject→ rejected├─start→ in-progress                    receive-result ↓
        ├─redirect→ cancelled (redirected; a new referral carries on)          closed
        └─cancel→ cancelled (also from accepted, booked, no-show)

A downward referral (city/county → county/township) adds ``follow-up``: the receiving
site records each follow-up visit (远程随访), which flows back to the referring
specialist. Who acts: staff of the requesting site (REQUESTER), of the target site
(OWNER), a regional administrator (ADMIN), the gateway itself (SYSTEM: a node's receipt
of the result) — each with the staff roles a rule names.
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

__all__ = ["ReferralState", "ACTIONS", "UPWARD", "DOWNWARD", "table_for", "OPEN_STATES"]


class ReferralState(WorkflowState):
    DRAFT = (TaskStatus.DRAFT, "draft")                    # before create; never stored
    REQUESTED = (TaskStatus.REQUESTED, "awaiting-triage")
    ACCEPTED = (TaskStatus.ACCEPTED, "accepted")
    BOOKED = (TaskStatus.ACCEPTED, "booked")
    NO_SHOW = (TaskStatus.ACCEPTED, "no-show")
    IN_PROGRESS = (TaskStatus.IN_PROGRESS, "in-visit")
    FOLLOW_UP = (TaskStatus.IN_PROGRESS, "follow-up")
    RESULT_SENT = (TaskStatus.COMPLETED, "result-sent")
    CLOSED = (TaskStatus.COMPLETED, "closed")
    REJECTED = (TaskStatus.REJECTED, "rejected")
    REDIRECTED = (TaskStatus.CANCELLED, "redirected")
    CANCELLED = (TaskStatus.CANCELLED, "cancelled")


ACTIONS = ("create", "accept", "reject", "redirect", "book", "no-show", "note", "start",
           "follow-up", "complete", "receive-result", "cancel")

S = ReferralState
_REQ, _OWN, _ADMIN, _SYS = Party.REQUESTER, Party.OWNER, Party.ADMIN, Party.SYSTEM
CLINICIANS = frozenset({"doctor", "specialist"})
TRIAGE = CLINICIANS | {"site-admin"}
DESK = TRIAGE | {"nurse"}
CANCELLERS = TRIAGE | {"regional-admin"}
ACK, DONE, CLOSE = Milestone.ACKNOWLEDGED, Milestone.COMPLETED, Milestone.CLOSED
OPEN_STATES = (S.REQUESTED, S.ACCEPTED, S.BOOKED, S.NO_SHOW, S.IN_PROGRESS, S.FOLLOW_UP,
               S.RESULT_SENT)


def _rule(source: S, action: str, target: S, parties: set[Party], roles: frozenset[str],
          *marks: Milestone) -> Rule:
    return Rule(source, action, target, frozenset(parties), roles, frozenset(marks))


_COMMON = [
    _rule(S.DRAFT, "create", S.REQUESTED, {_REQ}, CLINICIANS),
    _rule(S.REQUESTED, "accept", S.ACCEPTED, {_OWN}, TRIAGE, ACK),
    _rule(S.REQUESTED, "reject", S.REJECTED, {_OWN}, TRIAGE, ACK, CLOSE),
    _rule(S.REQUESTED, "redirect", S.REDIRECTED, {_OWN}, TRIAGE, ACK, CLOSE),
    *(_rule(s, "book", S.BOOKED, {_OWN}, DESK) for s in (S.ACCEPTED, S.BOOKED, S.NO_SHOW)),
    _rule(S.BOOKED, "no-show", S.NO_SHOW, {_OWN}, DESK),
    *(_rule(s, "start", S.IN_PROGRESS, {_OWN}, DESK) for s in (S.ACCEPTED, S.BOOKED)),
    *(_rule(s, "note", s, {_REQ, _OWN}, DESK)
      for s in (S.REQUESTED, S.ACCEPTED, S.BOOKED, S.NO_SHOW, S.IN_PROGRESS, S.FOLLOW_UP)),
    _rule(S.IN_PROGRESS, "complete", S.RESULT_SENT, {_OWN}, CLINICIANS, DONE),
    _rule(S.RESULT_SENT, "receive-result", S.CLOSED, {_SYS, _REQ}, DESK, CLOSE),
    *(_rule(s, "cancel", S.CANCELLED, {_REQ, _ADMIN}, CANCELLERS, CLOSE)
      for s in (S.REQUESTED, S.ACCEPTED, S.BOOKED, S.NO_SHOW)),
]

_FOLLOW_UPS = [
    *(_rule(s, "follow-up", S.FOLLOW_UP, {_OWN}, DESK)
      for s in (S.ACCEPTED, S.BOOKED, S.IN_PROGRESS, S.FOLLOW_UP)),
    _rule(S.FOLLOW_UP, "complete", S.RESULT_SENT, {_OWN}, CLINICIANS, DONE),
]

#: upward referrals (township → county → city)
UPWARD = TransitionTable("referral", ReferralState, ACTIONS, _COMMON)
#: downward referrals add the follow-up visits that flow back to the specialist
DOWNWARD = TransitionTable("referral", ReferralState, ACTIONS, _COMMON + _FOLLOW_UPS)


def table_for(category: str) -> TransitionTable:
    return DOWNWARD if category == "downward" else UPWARD
