"""The audit search and the kept verification results, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from audit_factories import T0, exchange
from sqlalchemy import Engine, event, text

from federation.archive.read import patient_ref
from federation.archive.service import person_ref as archive_person_ref
from federation.audit.search import EventQuery, ExchangeSearch, patient_refs
from federation.audit.verifications import Verifications, run_verification
from federation.errors import InvalidInput, NotFound
from federation.identity.index import RecordRef
from federation.identity.lookup import person_ref
from federation.identity.store import IdentityStore
from federation.store import GatewayStore
from federation.synth.people import resident_id

H = dt.timedelta(hours=1)
WEI = {"name": "张伟", "sex": "male", "birth_date": "1968-04-12",
       "national_id": resident_id("532323", dt.date(1968, 4, 12), "male", 17),
       "phone": "13812345678", "address": "青岚市东阳县石门镇上坪村12号"}
FANG = {"name": "王芳", "sex": "female", "birth_date": "1990-01-01", "phone": "13900001111"}


@pytest.fixture
def seeded(gw_store: GatewayStore) -> list[int]:
    """Ten exchanges an hour apart: sites, purposes and outcomes vary; ids in order."""
    entries = [
        exchange(0, at=T0, requester_site="county-a", target_site="city-1", purpose="TREAT"),
        exchange(1, at=T0 + H, requester_site="county-b", target_site="city-1",
                 purpose="COC", operation="Referral/Create"),
        exchange(2, at=T0 + 2 * H, requester_site="county-a", target_site="county-b",
                 purpose="TREAT", outcome="refused", status_code="PERMISSION_DENIED"),
        exchange(3, at=T0 + 3 * H, requester_kind="user", requester_id="wang.li",
                 requester_site="county-a", target_site=None, purpose="ETREAT",
                 operation="Archive/Patient.$everything", detail="卒中急救"),
        exchange(4, at=T0 + 4 * H, requester_site="city-1", target_site="county-a",
                 purpose="COC", operation="Referral/Accept"),
        exchange(5, at=T0 + 5 * H, requester_kind="user", requester_id="wang.li",
                 requester_site="county-a", target_site="city-1", purpose="TREAT"),
        *[exchange(6 + i, at=T0 + (6 + i) * H, requester_site="county-b",
                   target_site="county-a", purpose="HOPERAT") for i in range(4)],
    ]
    return gw_store.log_exchanges(entries)


def _q(**over: object) -> EventQuery:
    return EventQuery(**({"since": T0, "until": T0 + 24 * H} | over))  # type: ignore[arg-type]


def _ids(search: ExchangeSearch, q: EventQuery, **page: int) -> list[int]:
    rows, _ = search.search(q, **page)
    return [int(r.entry.id or 0) for r in rows]


def test_filters_return_exactly_the_matching_exchanges(audit_engine: Engine,
                                                       seeded: list[int]) -> None:
    s = ExchangeSearch(audit_engine)
    x = dict(enumerate(seeded))
    # newest first; a site matches as requester or as target
    assert _ids(s, _q(site="county-b")) == [x[9], x[8], x[7], x[6], x[2], x[1]]
    assert _ids(s, _q(purpose="COC")) == [x[4], x[1]]
    assert _ids(s, _q(site="city-1", purpose="TREAT")) == [x[5], x[0]]
    assert _ids(s, _q(since=T0 + 2 * H, until=T0 + 5 * H)) == [x[4], x[3], x[2]]
    assert _ids(s, _q(outcome="refused")) == [x[2]]
    assert _ids(s, _q(operation="Referral*")) == [x[4], x[1]]
    assert _ids(s, _q(operation="Referral/Create")) == [x[1]]
    assert _ids(s, _q(operation="Referral_*")) == []          # LIKE wildcards escaped
    assert _ids(s, _q(requester_id="wang.li")) == [x[5], x[3]]
    assert _ids(s, _q(requester_kind="node", requester_id="wang.li")) == []
    assert _ids(s, _q(patient_refs=frozenset({f"{3:032x}", f"{7:032x}"}))) == [x[7], x[3]]
    assert _ids(s, _q(patient_refs=frozenset())) == []


def test_rows_carry_what_the_console_shows_and_paging_counts_all(
        audit_engine: Engine, seeded: list[int]) -> None:
    s = ExchangeSearch(audit_engine)
    page, total = s.search(_q(site="county-b"), offset=2, limit=3)
    assert total == 6 and [r.entry.id for r in page] == [seeded[7], seeded[6], seeded[2]]
    rows, _ = s.search(_q(purpose="ETREAT"))
    [glass] = rows
    assert (glass.entry.requester_kind, glass.entry.requester_id, glass.entry.detail,
            glass.entry.at) == ("user", "wang.li", "卒中急救", T0 + 3 * H)
    # every exchange was appended to the trail in order: leaf i is the i-th exchange
    assert glass.leaf == 3
    assert s.search(_q(), offset=10)[0] == [] and s.search(_q(), offset=10)[1] == 10


def test_bad_windows_are_refused() -> None:
    with pytest.raises(InvalidInput, match="before"):
        _q(since=T0, until=T0)
    with pytest.raises(InvalidInput, match="at most 366 days"):
        _q(until=T0 + dt.timedelta(days=367))
    with pytest.raises(InvalidInput, match="time zone"):
        _q(since=dt.datetime(2025, 3, 1))


def test_time_window_searches_read_through_indexes(audit_engine: Engine,
                                                   seeded: list[int]) -> None:
    """No full scan of the exchange log for any filter (PostgreSQL with sequential scans
    priced out, so only a missing index could make it scan)."""
    s = ExchangeSearch(audit_engine)
    for q in (_q(), _q(site="county-a", purpose="TREAT"), _q(requester_id="wang.li"),
              _q(patient_refs=frozenset({f"{3:032x}"})), _q(operation="Referral*")):
        for plan in _plans(audit_engine, lambda q=q: s.search(q)):
            steps = [step.strip() for step in plan.split("|")]
            assert not any(step.startswith(("SCAN exchange_log", "->  Seq Scan on exchange_log",
                                            "Seq Scan on exchange_log")) for step in steps), plan
            assert "exchange_log USING" in plan or "on exchange_log" in plan, plan


def _plans(engine: Engine, run) -> list[str]:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "exchange_log" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    assert seen
    sqlite = engine.dialect.name == "sqlite"
    out = []
    with engine.connect() as conn:
        if not sqlite:
            conn.execute(text("SET enable_seqscan = off"))
        for statement, parameters in seen:
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()  # type: ignore[arg-type]
            out.append(" | ".join(str(r[-1]) for r in rows))
    return out


def test_a_person_is_found_under_every_hash_the_log_keeps(audit_engine: Engine,
                                                          gw_store: GatewayStore) -> None:
    empi = IdentityStore(audit_engine)
    a = empi.link("county-a", "rec-a", WEI)
    b = empi.link("city-1", "rec-b", WEI)
    other = empi.link("county-b", "rec-c", FANG)
    wei = str(a.person_id)
    assert b.person_id == wei != other.person_id
    # a third record of Wei arrives as its own person, and is merged in by an administrator
    c = empi.link("county-b", "rec-d", {"name": "张伟", "sex": "male", "phone": "13700000000",
                                        "birth_date": "1955-01-01"})
    assert c.person_id != wei
    empi.merge(wei, str(c.person_id), actor="admin")
    refs = patient_refs(empi, wei)
    assert {patient_ref("county-a", "rec-a"), patient_ref("city-1", "rec-b"),
            patient_ref("county-b", "rec-d"), person_ref(wei), archive_person_ref(wei),
            person_ref(str(c.person_id))} <= refs
    assert patient_ref("county-b", "rec-c") not in refs
    assert person_ref(str(other.person_id)) not in refs
    ids = gw_store.log_exchanges([
        exchange(0, patient_ref=patient_ref("county-a", "rec-a")),
        exchange(1, patient_ref=person_ref(wei)),
        exchange(2, patient_ref=patient_ref("county-b", "rec-c")),      # Fang
        exchange(3, patient_ref=archive_person_ref(wei)),
        exchange(4, patient_ref=patient_ref("county-b", "rec-d")),      # merged in
        exchange(5, patient_ref=None)])
    found = _ids(ExchangeSearch(audit_engine), _q(patient_refs=refs))
    assert found == [ids[4], ids[3], ids[1], ids[0]]
    # a record split away later still counts: the exchange was about Wei at the time
    empi.split(RecordRef("city-1", "rec-b"), actor="admin")
    assert patient_ref("city-1", "rec-b") in patient_refs(empi, wei)
    with pytest.raises(NotFound):
        patient_refs(empi, "P-nobody")


def test_verification_results_are_kept_and_the_first_bad_entry_named(
        audit_engine: Engine, seeded: list[int], pki) -> None:  # type: ignore[no-untyped-def]
    ca = pki.tls("gateway").ca.read_bytes()
    kept = Verifications(audit_engine)
    assert kept.latest() is None
    good = run_verification(audit_engine, ca, by="consortium/auditor.sun")
    assert (good.ok, good.entries, good.tree_size, good.first_bad_entry) == (True, 10, 10, None)
    with audit_engine.connect() as conn:
        root = conn.execute(text("SELECT root_hash FROM audit_head")).scalar_one()
    assert good.root == bytes(root).hex()
    kept.record(good)
    assert kept.latest() == good
    # someone edits the exchange row behind leaf 6 (its purpose) in the database
    with audit_engine.begin() as conn:
        conn.execute(text("UPDATE exchange_log SET purpose = 'TREAT' WHERE id = :i"),
                     {"i": seeded[6]})
    bad = run_verification(audit_engine, ca, by="consortium/auditor.sun",
                           clock=lambda: good.verified_at + dt.timedelta(minutes=5))
    assert not bad.ok and bad.first_bad_entry is not None
    assert (bad.first_bad_entry["leaf"], bad.first_bad_entry["kind"],
            bad.first_bad_entry["exchange_id"]) == (6, "exchange", seeded[6])
    assert bad.message.startswith("TAMPERED") and "leaf 6" in bad.message
    kept.record(bad)
    assert kept.latest() == bad           # the newest run is the status
