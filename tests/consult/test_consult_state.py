"""The consult's transition table, walked whole: every (state, action) pair is either in
the written-out specification below and leads where it says, or raises InvalidTransition;
parties and staff roles are checked for every legal move."""

from __future__ import annotations

import itertools

import pytest

from federation.consult.state import ACTIONS, TABLE, ConsultState
from federation.errors import InvalidTransition, PermissionDenied
from federation.workflow.state import Actor, Party, parties_of

S = ConsultState
SPEC = {
    (S.DRAFT, "create"): S.REQUESTED,
    (S.REQUESTED, "claim"): S.CLAIMED,
    (S.REQUESTED, "decline"): S.REQUESTED,
    (S.REQUESTED, "cancel"): S.CANCELLED,
    (S.CLAIMED, "decline"): S.REQUESTED,
    (S.CLAIMED, "hand-over"): S.CLAIMED,
    (S.CLAIMED, "schedule"): S.SCHEDULED,
    (S.CLAIMED, "report"): S.REPORTED,
    (S.CLAIMED, "cancel"): S.CANCELLED,
    (S.SCHEDULED, "hand-over"): S.SCHEDULED,
    (S.SCHEDULED, "start"): S.IN_SESSION,
    (S.SCHEDULED, "cancel"): S.CANCELLED,
    (S.IN_SESSION, "end"): S.SESSION_HELD,
    (S.SESSION_HELD, "report"): S.REPORTED,
    (S.REPORTED, "amend"): S.REPORTED,
    (S.REPORTED, "ack"): S.CLOSED,
    (S.CLOSED, "amend"): S.REPORTED,
}
GOD = Actor("anyone", frozenset(Party),
            frozenset({"doctor", "specialist", "nurse", "site-admin", "regional-admin"}))


@pytest.mark.parametrize(("state", "action"), list(itertools.product(S, ACTIONS)),
                         ids=lambda v: getattr(v, "name", v))
def test_every_pair_is_specified_or_refused(state: S, action: str) -> None:
    if (state, action) in SPEC:
        assert TABLE.transition(state, action, GOD).target is SPEC[(state, action)]
    else:
        with pytest.raises(InvalidTransition, match=f"cannot {action}"):
            TABLE.transition(state, action, GOD)


def test_only_the_claimant_carries_a_claimed_consult() -> None:
    colleague = Actor("dr-sun", frozenset({Party.OWNER}), frozenset({"specialist"}))
    for action in ("report", "schedule", "hand-over"):
        with pytest.raises(PermissionDenied, match="assigned to"):
            TABLE.transition(S.CLAIMED, action, colleague)
    claimant = Actor("dr-li", frozenset({Party.OWNER, Party.ASSIGNEE}), frozenset({"specialist"}))
    assert TABLE.transition(S.CLAIMED, "report", claimant).target is S.REPORTED


def test_claims_need_a_specialist_of_the_hub_and_acks_the_requester() -> None:
    doctor = Actor("dr-zhou", frozenset({Party.OWNER}), frozenset({"doctor"}))
    with pytest.raises(PermissionDenied, match="specialist"):
        TABLE.transition(S.REQUESTED, "claim", doctor)
    hub = Actor("dr-li", frozenset({Party.OWNER, Party.ASSIGNEE}), frozenset({"specialist"}))
    with pytest.raises(PermissionDenied, match="requesting site"):
        TABLE.transition(S.REPORTED, "ack", hub)


def test_the_assignee_is_a_party_only_when_the_actor_is_them() -> None:
    mine = parties_of("person", "city-1", ["specialist"], requester_site="county-a",
                      owner_site="city-1", actor_id="city-1/dr-li", assignee="city-1/dr-li")
    other = parties_of("person", "city-1", ["specialist"], requester_site="county-a",
                       owner_site="city-1", actor_id="city-1/dr-sun", assignee="city-1/dr-li")
    assert mine == {Party.OWNER, Party.ASSIGNEE} and other == {Party.OWNER}
