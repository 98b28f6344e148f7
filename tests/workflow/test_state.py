"""The referral's transition table, walked whole: every (state, action) pair is either in
the written-out specification below and leads where it says, or raises InvalidTransition;
parties and staff roles are checked for every legal move."""

from __future__ import annotations

import itertools

import pytest

from federation.errors import InvalidTransition, PermissionDenied
from federation.referral.state import ACTIONS, DOWNWARD, UPWARD, ReferralState
from federation.workflow.state import (
    Actor,
    Party,
    Rule,
    TaskStatus,
    TransitionTable,
    WorkflowState,
    parties_of,
)

S = ReferralState
# the specification, written independently of the table: (state, action) -> target
UPWARD_SPEC = {
    (S.DRAFT, "create"): S.REQUESTED,
    (S.REQUESTED, "accept"): S.ACCEPTED,
    (S.REQUESTED, "reject"): S.REJECTED,
    (S.REQUESTED, "redirect"): S.REDIRECTED,
    (S.REQUESTED, "note"): S.REQUESTED,
    (S.REQUESTED, "cancel"): S.CANCELLED,
    (S.ACCEPTED, "book"): S.BOOKED,
    (S.ACCEPTED, "start"): S.IN_PROGRESS,
    (S.ACCEPTED, "note"): S.ACCEPTED,
    (S.ACCEPTED, "cancel"): S.CANCELLED,
    (S.BOOKED, "book"): S.BOOKED,
    (S.BOOKED, "no-show"): S.NO_SHOW,
    (S.BOOKED, "start"): S.IN_PROGRESS,
    (S.BOOKED, "note"): S.BOOKED,
    (S.BOOKED, "cancel"): S.CANCELLED,
    (S.NO_SHOW, "book"): S.BOOKED,
    (S.NO_SHOW, "note"): S.NO_SHOW,
    (S.NO_SHOW, "cancel"): S.CANCELLED,
    (S.IN_PROGRESS, "note"): S.IN_PROGRESS,
    (S.IN_PROGRESS, "complete"): S.RESULT_SENT,
    (S.FOLLOW_UP, "note"): S.FOLLOW_UP,
    (S.RESULT_SENT, "receive-result"): S.CLOSED,
}
DOWNWARD_SPEC = UPWARD_SPEC | {
    (S.ACCEPTED, "follow-up"): S.FOLLOW_UP,
    (S.BOOKED, "follow-up"): S.FOLLOW_UP,
    (S.IN_PROGRESS, "follow-up"): S.FOLLOW_UP,
    (S.FOLLOW_UP, "follow-up"): S.FOLLOW_UP,
    (S.FOLLOW_UP, "complete"): S.RESULT_SENT,
}
ALL_PARTIES = frozenset(Party)
ALL_ROLES = frozenset({"doctor", "specialist", "nurse", "site-admin", "regional-admin"})
GOD = Actor("anyone", ALL_PARTIES, ALL_ROLES)


def _pairs():
    return list(itertools.product(ReferralState, ACTIONS))


@pytest.mark.parametrize("table,spec", [(UPWARD, UPWARD_SPEC), (DOWNWARD, DOWNWARD_SPEC)],
                         ids=["upward", "downward"])
def test_table_is_exactly_the_specification(table, spec):
    assert {(r.source, r.action): r.target for r in table.rules} == spec


@pytest.mark.parametrize("state,action", _pairs(), ids=lambda v: getattr(v, "name", v))
@pytest.mark.parametrize("table,spec", [(UPWARD, UPWARD_SPEC), (DOWNWARD, DOWNWARD_SPEC)],
                         ids=["upward", "downward"])
def test_every_pair_is_legal_or_a_specific_error(table, spec, state, action):
    if (state, action) in spec:
        assert table.transition(state, action, GOD).target is spec[(state, action)]
    else:
        with pytest.raises(InvalidTransition) as err:
            table.transition(state, action, GOD, subject="referral R1")
        assert f"cannot {action} referral R1" in err.value.message


def test_messages_say_what_is_allowed_now():
    with pytest.raises(InvalidTransition, match="cannot accept referral R1: it is cancelled; nothing more"):
        UPWARD.transition(S.CANCELLED, "accept", GOD, subject="referral R1")
    with pytest.raises(InvalidTransition, match=r"it is requested \(awaiting-triage\); allowed now: "
                                                r"accept, reject, redirect, note, cancel"):
        UPWARD.transition(S.REQUESTED, "complete", GOD, subject="referral R1")
    with pytest.raises(InvalidTransition, match="not a referral action"):
        UPWARD.transition(S.REQUESTED, "approve", GOD)


@pytest.mark.parametrize("rule", UPWARD.rules + DOWNWARD.rules,
                         ids=lambda r: f"{r.source.name}-{r.action}")
def test_every_rule_refuses_other_parties_and_roles(rule: Rule):
    outsiders = ALL_PARTIES - rule.parties
    if outsiders:
        with pytest.raises(PermissionDenied, match="may not"):
            UPWARD_OR_DOWN(rule).transition(rule.source, rule.action,
                                            Actor("x", frozenset(outsiders), ALL_ROLES))
    human = rule.parties - {Party.SYSTEM}
    if human and rule.roles:
        wrong = frozenset(ALL_ROLES - rule.roles)
        with pytest.raises(PermissionDenied, match="staff role"):
            UPWARD_OR_DOWN(rule).transition(rule.source, rule.action,
                                            Actor("x", frozenset(human), wrong))
        assert UPWARD_OR_DOWN(rule).transition(
            rule.source, rule.action, Actor("x", frozenset(human), rule.roles)) == rule
    if Party.SYSTEM in rule.parties:  # the gateway needs no staff role
        assert UPWARD_OR_DOWN(rule).transition(
            rule.source, rule.action, Actor("gw", frozenset({Party.SYSTEM}))) == rule


def UPWARD_OR_DOWN(rule: Rule) -> TransitionTable:
    return UPWARD if rule in UPWARD.rules else DOWNWARD


def test_parties_follow_the_sites_not_the_request():
    p = parties_of("person", "township-a1", {"doctor"}, requester_site="county-a",
                   owner_site="city-1")
    assert p == frozenset()
    with pytest.raises(PermissionDenied, match="staff of the site it is addressed to"):
        UPWARD.transition(S.REQUESTED, "accept", Actor("t", p, frozenset({"doctor"})))
    assert parties_of("person", "city-1", {"doctor"}, requester_site="county-a",
                      owner_site="city-1") == {Party.OWNER}
    assert parties_of("person", "x", {"regional-admin"}, requester_site="a",
                      owner_site="b") == {Party.ADMIN}
    assert parties_of("system", None, (), requester_site="a", owner_site="b") == {Party.SYSTEM}


def test_a_table_checks_itself():
    class Tiny(WorkflowState):
        A = (TaskStatus.REQUESTED, "a")
        B = (TaskStatus.COMPLETED, "b")

    rule = Rule(Tiny.A, "go", Tiny.B, frozenset({Party.OWNER}))
    with pytest.raises(ValueError, match="two rules"):
        TransitionTable("tiny", Tiny, ["go"], [rule, rule])
    with pytest.raises(ValueError, match="unknown action"):
        TransitionTable("tiny", Tiny, ["stop"], [rule])
    with pytest.raises(ValueError, match="foreign state"):
        TransitionTable("tiny", Tiny, ["go"], [Rule(S.REQUESTED, "go", Tiny.B, frozenset())])
    assert Tiny.of("completed", "b") is Tiny.B


@pytest.mark.parametrize("table", [UPWARD, DOWNWARD], ids=["upward", "downward"])
@pytest.mark.parametrize("state", list(S), ids=lambda s: s.name)
def test_permitted_is_exactly_what_transition_lets_through(table, state):
    """What a person's screen offers agrees with what the move itself checks, for every
    party and role combination of note."""
    for parties in ({Party.REQUESTER}, {Party.OWNER}, {Party.ADMIN}, {Party.SYSTEM}, set()):
        for roles in ({"doctor"}, {"nurse"}, {"site-admin"}, {"regional-admin"}, set()):
            actor = Actor("x", frozenset(parties), frozenset(roles))
            offered = table.permitted(state, actor)
            for action in table.allowed(state):
                try:
                    table.transition(state, action, actor)
                    ok = True
                except PermissionDenied:
                    ok = False
                assert (action in offered) == ok, (state, action, parties, roles)
    nurse_at_owner = Actor("n", frozenset({Party.OWNER}), frozenset({"nurse"}))
    if state is S.REQUESTED:
        assert table.permitted(state, nurse_at_owner) == ["note"]   # triage is not hers
