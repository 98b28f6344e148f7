"""The online EMPI on both backends: linking, review, people's decisions, concurrency."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import Engine, func, select

from federation.archive.store import ArchiveStore, StoredChange
from federation.errors import Conflict, NotFound, UnknownSite
from federation.fhir_systems import RESIDENT_ID_SYSTEM, local_patient_id_system
from federation.identity.index import RecordRef
from federation.identity.store import IdentityStore
from federation.security.privacy import FieldCipher, create_keyring
from federation.store import GatewayStore
from federation.store.models import IdentityEvent, IdentityRecord
from federation.synth.people import resident_id

BORN = dt.date(1968, 4, 12)
WEI_ID = resident_id("532323", BORN, "male", 17)


def wei(**over: object) -> dict[str, object]:
    base = {"name": "张伟", "sex": "male", "birth_date": "1968-04-12", "national_id": WEI_ID,
            "phone": "13812345678", "address": "青岚市东阳县石门镇上坪村12号"}
    return {**base, **over}


@pytest.fixture(params=["clear", "encrypted"])
def empi(request: pytest.FixtureRequest, sites: GatewayStore, engine: Engine,
         tmp_path) -> IdentityStore:
    """The EMPI as it was, and with IDs and phones encrypted at rest: same behaviour."""
    if request.param == "clear":
        return IdentityStore(engine)
    create_keyring(tmp_path / "keys.json")
    return IdentityStore(engine, cipher=FieldCipher(tmp_path / "keys.json"))


def test_same_person_at_two_sites_is_one_person_with_reasons(empi: IdentityStore) -> None:
    a = empi.link("county-a", "rec-a", wei(), local_id="A0001")
    # township record: traditional characters, 15-digit legacy ID, +86 phone, short address
    legacy = WEI_ID[:6] + WEI_ID[8:17]
    b = empi.link("township-a1", "rec-b", wei(name="張偉", national_id=legacy,
                                              phone="+86 138 1234 5678",
                                              address="石门镇上坪村12号"))
    assert (a.outcome, b.outcome) == ("new", "linked")
    assert a.person_id == b.person_id
    view = empi.person(str(a.person_id))
    assert {(r["site_id"], r["record_id"]) for r in view.records} == {
        ("county-a", "rec-a"), ("township-a1", "rec-b")}
    link = next(e for e in view.history if e["action"] == "auto-link")
    fields = {c["field"] for c in link["detail"]["contributions"]}
    assert {"national_id", "phone", "birth_date", "given"} <= fields
    assert link["weight"] >= empi.model().upper


def test_twins_sharing_everything_but_given_name_and_id_stay_apart(empi: IdentityStore) -> None:
    first = empi.link("county-a", "t1", wei())
    twin_id = resident_id("532323", BORN, "male", 19)
    second = empi.link("county-a", "t2", wei(name="张强", national_id=twin_id))
    assert first.person_id != second.person_id
    assert second.outcome == "new"


def test_namesake_without_contact_overlap_goes_to_review_not_merged(empi: IdentityStore) -> None:
    first = empi.link("county-a", "n1", wei(national_id=None))
    other = empi.link("city-1", "n2", wei(national_id=None, phone="13900001111",
                                          address="青岚市城关区人民路88号"))
    assert other.person_id != first.person_id
    assert other.outcome == "review"
    [item] = empi.review_queue()
    assert item.record == RecordRef("city-1", "n2") and "uncorroborated" in item.reason
    assert item.candidate_person_id == first.person_id
    assert any(c["field"] == "birth_date" for c in item.contributions)


def test_reject_is_remembered_and_never_undone(empi: IdentityStore) -> None:
    first = empi.link("county-a", "n1", wei(national_id=None))
    empi.link("city-1", "n2", wei(national_id=None, phone="13900001111",
                                  address="青岚市城关区人民路88号"))
    [item] = empi.review_queue()
    empi.reject(item.id, actor="reviewer-li")
    # the site later sends the record again with the first one's phone: a strong match now
    again = empi.link("city-1", "n2", wei(national_id=None, address="青岚市城关区人民路88号"))
    assert again.person_id != first.person_id
    assert empi.review_queue() == []
    with pytest.raises(Conflict, match="not the same person"):
        empi.merge(str(first.person_id), str(again.person_id), actor="admin")


def test_accept_moves_the_record_and_pins_it(empi: IdentityStore, engine: Engine) -> None:
    first = empi.link("county-a", "n1", wei(national_id=None))
    empi.link("city-1", "n2", wei(national_id=None, phone="13900001111",
                                  address="青岚市城关区人民路88号"))
    [item] = empi.review_queue()
    assert empi.accept(item.id, actor="reviewer-li") == first.person_id
    assert empi.person_of(RecordRef("city-1", "n2")) == first.person_id
    with pytest.raises(Conflict, match="already accepted"):
        empi.accept(item.id, actor="reviewer-li")
    # a later update of the record does not move it away from the reviewer's decision
    empi.link("city-1", "n2", wei(national_id=None, name="王芳", sex="female",
                                  birth_date="1990-01-01"))
    assert empi.person_of(RecordRef("city-1", "n2")) == first.person_id


def test_record_matching_two_persons_goes_to_review(empi: IdentityStore) -> None:
    # two persons an administrator split apart, then a record that matches both
    empi.link("county-a", "x1", wei())
    empi.link("county-b", "x2", wei())
    original = empi.person_of(RecordRef("county-a", "x1"))
    assert empi.person_of(RecordRef("county-b", "x2")) == original
    split_to = empi.split(RecordRef("county-b", "x2"), actor="admin")
    third = empi.link("city-1", "x3", wei())
    assert third.outcome == "review"
    assert third.person_id not in (original, split_to)
    reasons = {i.reason for i in empi.review_queue()}
    assert reasons == {"matches-several-persons"}


def test_split_keeps_history_and_manual_link_needs_no_shared_data(empi: IdentityStore) -> None:
    empi.link("county-a", "s1", wei())
    empi.link("county-b", "s2", wei())
    person = str(empi.person_of(RecordRef("county-a", "s1")))
    new = empi.split(RecordRef("county-b", "s2"), actor="admin-wang")
    assert empi.person_of(RecordRef("county-b", "s2")) == new != person
    history = [e["action"] for e in empi.person(new).history]
    assert "split" in history
    # the person the record left keeps the event too (found by previous_person_id)
    left = [e for e in empi.person(person).history if e["action"] == "split"]
    assert [(e["previous"], e["person_id"]) for e in left] == [(person, new)]
    # an unrelated record, linked by hand to the first person
    empi.link("city-1", "s3", {"name": "王芳", "sex": "female", "birth_date": "1990-01-01"})
    assert empi.link_records(RecordRef("county-a", "s1"), RecordRef("city-1", "s3"),
                             actor="admin-wang") == person
    assert {r["record_id"] for r in empi.person(person).records} == {"s1", "s3"}
    # the split is remembered as "not the same person"
    with pytest.raises(Conflict, match="not the same person"):
        empi.link_records(RecordRef("county-a", "s1"), RecordRef("county-b", "s2"),
                          actor="admin-wang")


def test_merge_moves_every_record_and_leaves_a_trail(empi: IdentityStore) -> None:
    a = empi.link("county-a", "m1", wei())
    b = empi.link("city-1", "m2", {"name": "王芳", "sex": "female", "birth_date": "1990-01-01"})
    assert empi.merge(str(a.person_id), str(b.person_id), actor="admin") == a.person_id
    assert empi.person(str(b.person_id)).merged_into == a.person_id
    assert len(empi.person(str(a.person_id)).records) == 2
    with pytest.raises(NotFound, match="merged away"):
        empi.merge(str(a.person_id), str(b.person_id), actor="admin")


def test_blank_record_is_stored_never_linked(empi: IdentityStore, engine: Engine) -> None:
    out = empi.link("county-a", "blank", {"name": "", "sex": "", "birth_date": "2199-01-01"})
    assert (out.outcome, out.person_id) == ("blank", None)
    again = empi.link("county-b", "blank2", {"address": "x"})
    assert again.person_id is None
    with engine.connect() as c:
        states = dict(c.execute(select(IdentityRecord.record_id, IdentityRecord.state)).all())
    assert states == {"blank": "blank", "blank2": "blank"}
    assert empi.counts()["blank"] == 2


def test_id_contradicting_birth_date_is_not_used_to_merge(empi: IdentityStore) -> None:
    a = empi.link("county-a", "c1", wei())
    # a stranger whose record carries the first one's ID but another birth date
    b = empi.link("county-b", "c2", {"name": "李娜", "sex": "female",
                                     "birth_date": "1985-02-03", "national_id": WEI_ID})
    assert a.person_id != b.person_id


def test_unknown_site_is_refused_and_stores_nothing(empi: IdentityStore) -> None:
    with pytest.raises(UnknownSite, match="nowhere"):
        empi.link("nowhere", "r1", wei())
    assert empi.counts()["records"] == 0


def test_pix_and_pdq(empi: IdentityStore) -> None:
    empi.link("county-a", "p1", wei(), local_id="A-77")
    empi.link("township-a1", "p2", wei(name="章伟"), local_id="T-9")
    ref = empi.find_record(local_patient_id_system("county-a"), "A-77")
    person = empi.person_of(ref)
    xrefs = empi.cross_references(str(person))
    assert {(x["site_id"], x["local_id"]) for x in xrefs} == {("county-a", "A-77"),
                                                               ("township-a1", "T-9")}
    assert empi.find_record(RESIDENT_ID_SYSTEM, WEI_ID).site_id in {"county-a", "township-a1"}
    hits = empi.search({"name": "zhang wei", "birth_date": "19680412"})
    assert {h["record_id"] for h in hits} == {"p1", "p2"}
    assert {h["person_id"] for h in hits} == {person}
    with pytest.raises(NotFound):
        empi.find_record(local_patient_id_system("county-a"), "nope")


def test_archive_links_patients_in_the_storing_transaction(sites: GatewayStore,
                                                           engine: Engine) -> None:
    archive = ArchiveStore(engine)
    now = dt.datetime.now(dt.UTC)

    def patient(pid: str, site: str, **fields: object) -> StoredChange:
        body = {"resourceType": "Patient", "id": pid,
                "identifier": [{"system": local_patient_id_system(site), "value": pid.upper()},
                               {"system": RESIDENT_ID_SYSTEM, "value": WEI_ID}],
                "name": [{"use": "official", "text": "张伟"}], "gender": "male",
                "birthDate": "1968-04-12", **fields}
        return StoredChange("Patient", pid, 1, False, pid, json.dumps(body).encode())

    archive.apply("county-a", "e1", [patient("pa", "county-a")], after=1, node_head=1,
                  rejected=0, now=now, caught_up=True)
    archive.apply("city-1", "e1", [patient("pc", "city-1")], after=1, node_head=1,
                  rejected=0, now=now, caught_up=True)
    empi = IdentityStore(engine)
    person = empi.person_of(RecordRef("county-a", "pa"))
    assert person is not None and empi.person_of(RecordRef("city-1", "pc")) == person
    assert empi.cross_references(person)[0]["local_id"] in {"PA", "PC"}
    # a deletion retires the record from its person
    archive.apply("city-1", "e1", [StoredChange("Patient", "pc", 2, True, "pc", None)],
                  after=2, node_head=2, rejected=0, now=now, caught_up=True)
    assert empi.person_of(RecordRef("city-1", "pc")) is None
    with engine.connect() as c:
        actions = c.execute(select(IdentityEvent.action).order_by(IdentityEvent.id)).scalars()
        assert list(actions) == ["new-person", "auto-link", "retire"]


@pytest.mark.postgres
def test_concurrent_arrivals_of_one_person_make_one_person(sites: GatewayStore, engine: Engine,
                                                           db_url: str) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the race needs two real writers: PostgreSQL")
    rounds, persons = 12, []
    for n in range(rounds):
        born = dt.date(1950 + n, 1 + n % 12, 3)
        fields = wei(birth_date=born.isoformat(),
                     national_id=resident_id("532323", born, "male", 30 + n),
                     phone=f"1391234{n:04d}")
        stores = [IdentityStore(engine), IdentityStore(engine)]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def go(store: IdentityStore, site: str, fields: dict = fields, n: int = n,
               barrier: threading.Barrier = barrier,
               errors: list[BaseException] = errors) -> None:
            try:
                barrier.wait()
                store.link(site, f"r{n}", fields)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(st, site))
                   for st, site in zip(stores, ("county-a", "county-b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        empi = IdentityStore(engine)
        persons.append({empi.person_of(RecordRef("county-a", f"r{n}")),
                        empi.person_of(RecordRef("county-b", f"r{n}"))})
    assert all(len(p) == 1 for p in persons), persons
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(IdentityRecord)).scalar_one() == 24
