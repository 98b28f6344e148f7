"""The consult rules as data: the packaged file loads, pools and slots answer, and a bad
file fails naming what is wrong."""

from __future__ import annotations

import datetime as dt

import pytest

from federation.consult.rules import load_rules, parse_rules
from federation.errors import ConfigError, InvalidInput, NotFound, PermissionDenied


def test_the_packaged_rules_have_a_pool_for_every_kind() -> None:
    rules = load_rules()
    assert {rules.pool_for(k, None).kind for k in rules.kinds} == set(rules.kinds)
    with pytest.raises(InvalidInput, match="kind must be one of"):
        rules.pool_for("dermatology", None)
    with pytest.raises(InvalidInput, match="takes imaging consults, not ecg"):
        rules.pool_for("ecg", "city-1-imaging")
    with pytest.raises(NotFound, match="no consult pool"):
        rules.pool("nowhere")


def test_slots_and_meeting_links() -> None:
    rules = load_rules()
    pool = rules.pool("city-1-imaging")            # mon–fri 09:00–17:00, 30 min
    monday = dt.datetime(2026, 11, 30, 9, 30, tzinfo=dt.UTC)
    assert pool.slots.is_slot(monday)
    assert not pool.slots.is_slot(monday + dt.timedelta(minutes=10))
    assert not pool.slots.is_slot(monday.replace(hour=16, minute=45))   # would end at 17:15
    assert not pool.slots.is_slot(monday + dt.timedelta(days=5))         # Saturday
    assert pool.slots.upcoming(monday, 2) == [monday + dt.timedelta(minutes=30),
                                              monday + dt.timedelta(minutes=60)]
    assert rules.meeting_link("con-1", pool.pool_id, monday).endswith(
        "/consult/con-1?slot=20261130T0930Z")


def test_pool_membership() -> None:
    rules = parse_rules({"kinds": ["ecg"], "urgencies": ["routine"],
                         "time_limits": {"routine": {"acknowledge": "1h"}},
                         "pool": [{"id": "ecg", "site": "city-1", "kind": "ecg",
                                   "members": ["dr-li"]}]}, "test")
    pool = rules.pool("ecg")
    assert pool.admits("city-1", "dr-li", frozenset({"specialist"}))
    assert not pool.admits("city-1", "dr-sun", frozenset({"specialist"}))
    assert not pool.admits("city-1", "dr-li", frozenset({"doctor"}))
    assert not pool.admits("county-a", "dr-li", frozenset({"specialist"}))
    with pytest.raises(PermissionDenied, match="only specialists of pool ecg"):
        pool.check_member("city-1", "dr-sun", frozenset({"specialist"}), "claim it")


@pytest.mark.parametrize(("change", "message"), [
    ({"kinds": []}, "'kinds' and 'urgencies'"),
    ({"meeting_url": "https://x/{room}"}, "meeting_url may use only"),
    ({"pool": [{"id": "Bad Id", "site": "s", "kind": "ecg", "members": ["*"]}]}, "id must be"),
    ({"pool": [{"id": "p", "site": "s", "kind": "x", "members": ["*"]}]}, "kind must be"),
    ({"pool": [{"id": "p", "site": "s", "kind": "ecg"}]}, "members must list"),
    ({"pool": [{"id": "p", "site": "s", "kind": "ecg", "members": ["*"],
                "slots": {"start": "9"}}]}, "slots.start must look like"),
    ({"time_limits": {}}, r"\[time_limits.routine\] needs 'acknowledge'"),
])
def test_bad_rules_name_what_is_wrong(change: dict, message: str) -> None:
    data = {"kinds": ["ecg"], "urgencies": ["routine"], "meeting_url": "https://m/{consult}",
            "time_limits": {"routine": {"acknowledge": "1h"}}} | change
    with pytest.raises(ConfigError, match=message):
        parse_rules(data, "test")


def test_pools_are_valid_practitioner_roles() -> None:
    from federation.consult.fhir import practitioner_role
    from federation.referral.fhir import validated
    for pool in load_rules().pools:
        validated(practitioner_role(pool))
        validated(practitioner_role(pool, "dr-li"))


@pytest.mark.parametrize(("reason", "text"), [
    ({"system": "http://hl7.org/fhir/sid/icd-10", "code": "R07.4"}, None),
    ({"system": "http://hl7.org/fhir/sid/icd-10", "code": "R07.4", "display": "胸痛"}, "胸痛"),
    ({"code": "R07.4", "text": "胸痛2小时"}, "胸痛2小时"),
])
def test_a_reason_with_or_without_words_is_a_valid_service_request(reason, text) -> None:
    from federation.consult import fhir

    rules = load_rules()
    sr = fhir.validated(fhir.service_request(
        "con-1", kind="ecg", mode="offline", urgency="urgent", pool=rules.pool("city-1-ecg"),
        requester_site="county-a", requester_user="dr-wang", patient_id="p1", person_id="P1",
        question="请判读心电图", reason=reason, studies=[],
        authored=dt.datetime(2026, 11, 30, tzinfo=dt.UTC)), "ServiceRequest")
    assert sr["reasonCode"][0]["coding"][0]["code"] == "R07.4"
    assert sr["reasonCode"][0].get("text") == text
