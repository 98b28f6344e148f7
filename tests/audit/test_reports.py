"""Administrators' reports: each rule fires on what it describes and not on normal work."""

from __future__ import annotations

import datetime as dt

import pytest
from audit_factories import exchange

from federation.audit.http import report_window
from federation.audit.reports import CST, Rules, build_report
from federation.errors import InvalidInput

DAY = dt.datetime(2025, 3, 3, 10, 0, tzinfo=CST)     # a Monday, 10:00 local
SINCE, UNTIL = dt.datetime(2025, 3, 1, tzinfo=CST), dt.datetime(2025, 3, 8, tzinfo=CST)


def read(i: int, at: dt.datetime, **over: object):
    return exchange(i, at=at, operation="Gateway/ReadPatientRecord", **over)


def _report(rows, rules: Rules = Rules()) -> dict:
    return build_report(rows, since=SINCE, until=UNTIL, rules=rules)


def test_volume_purposes_refusals_and_break_glass() -> None:
    rows = [read(i, DAY, requester_site="county-a", target_site="city-1", records=3)
            for i in range(4)]
    rows += [exchange(10, at=DAY, outcome="refused", status_code="forbidden",
                      operation="Gateway/SearchPatients", purpose=None)]
    rows += [read(11, DAY + dt.timedelta(days=1), purpose="ETREAT",
                  detail="unconscious patient in the emergency room", records=2)]
    rows += [read(12, UNTIL + dt.timedelta(hours=1))]        # outside the window
    body = _report(rows)
    assert body["exchanges"] == 6
    assert body["volume"][0] == {"day": "2025-03-03", "from": "county-a", "to": "city-1",
                                 "exchanges": 5, "records": 13}
    assert body["reads_by_purpose"] == {"ETREAT": 1, "TREAT": 4, "unspecified": 1}
    assert body["refusals"] == [{"requester": "node:county-a",
                                 "operation": "Gateway/SearchPatients", "status": "forbidden",
                                 "count": 1}]
    [glass] = body["break_glass"]
    assert glass["reason"] == "unconscious patient in the emergency room"
    assert body["anomalies"] == []


def test_many_unrelated_persons_in_a_day_are_flagged_but_own_and_referred_ones_are_not() -> None:
    rules = Rules(persons_per_day=5)
    snoop = [read(i, DAY, requester_kind="user", requester_id="dr-wang",
                  requester_site="county-a", target_site="city-1", patient_ref=f"p{i}")
             for i in range(6)]
    # the same volume, but each person was referred between the two sites first
    referred = [exchange(100 + i, at=DAY - dt.timedelta(hours=1), operation="Referral/Create",
                         requester_site="county-b", target_site="city-1", patient_ref=f"q{i}")
                for i in range(6)]
    referred += [read(200 + i, DAY, requester_kind="user", requester_id="dr-li",
                      requester_site="county-b", target_site="city-1", patient_ref=f"q{i}")
                 for i in range(6)]
    [finding] = _report(snoop + referred, rules)["anomalies"]
    assert (finding["rule"], finding["requester"], finding["persons"]) == (
        "unrelated-persons", "user:dr-wang", 6)


def test_bulk_reads_at_night_are_flagged() -> None:
    night = dt.datetime(2025, 3, 3, 23, 30, tzinfo=CST)
    rows = [read(i, night + dt.timedelta(minutes=i), requester_id="batch", records=1,
                 patient_ref=None) for i in range(60)]
    rows += [read(100 + i, DAY + dt.timedelta(minutes=i), requester_id="daytime",
                  patient_ref=None) for i in range(60)]
    [finding] = [a for a in _report(rows)["anomalies"] if a["rule"] == "bulk-night-reads"]
    assert (finding["requester"], finding["night"], finding["reads"]) == (
        "node:batch", "2025-03-03", 60)


def test_a_site_asking_far_beyond_its_peers_is_flagged_unless_referrals_explain_it() -> None:
    rows = []
    for n, site in ((10, "county-b"), (12, "township-a1"), (9, "township-b1"), (120, "county-a")):
        rows += [read(i, DAY, requester_site=site, requester_id=site, patient_ref=None)
                 for i in range(n)]
    [finding] = [a for a in _report(rows)["anomalies"] if a["rule"] == "beyond-peers"]
    assert (finding["requester_site"], finding["reads"], finding["peer_median"]) == (
        "county-a", 120, 10)
    rows += [exchange(500 + i, at=DAY, operation="Referral/Create", requester_site="county-a",
                      patient_ref=None) for i in range(8)]
    assert not [a for a in _report(rows)["anomalies"] if a["rule"] == "beyond-peers"]


def test_report_windows_are_checked() -> None:
    start, end = report_window("2025-03-01", "2025-03-08")
    assert (start, end) == (SINCE, UNTIL)
    assert report_window(None, None, today=dt.date(2025, 3, 7)) == (SINCE, UNTIL)
    for since, until in (("2025-03-08", "2025-03-01"), ("yesterday", None),
                         ("2024-01-01", "2025-01-01")):
        with pytest.raises(InvalidInput):
            report_window(since, until)
