"""The archive's person-level storage on SQLite and PostgreSQL: persons resolved through
the EMPI, several site records read in one query, the encounter care source, Consents,
and export jobs that only one replica can run at a time (and another takes over)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import Engine

from federation.archive.care import CareContext, EncounterCare
from federation.archive.consent import parse_consent
from federation.archive.export import ExportRequest, ExportStore
from federation.archive.people import PersonDirectory
from federation.archive.store import ArchiveStore, StoredChange
from federation.errors import InvalidInput, NotFound
from federation.identity.index import IdentityIndex
from federation.store import GatewayStore
from tests.archive.conftest import encounter, lab, patient

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
SITES = {"city-1", "county-a", "county-b", "township-a1"}


@pytest.fixture
def archive(sites: GatewayStore, engine: Engine) -> ArchiveStore:
    return ArchiveStore(engine, IdentityIndex())


def _put(archive: ArchiveStore, site: str, seq0: int, *resources: dict) -> None:
    changes = []
    for i, res in enumerate(resources):
        ref = (res.get("subject") or res.get("patient") or {}).get("reference", "")
        changes.append(StoredChange(res["resourceType"], res["id"], seq0 + i, False,
                                    ref.removeprefix("Patient/") or None,
                                    json.dumps(res).encode()))
    archive.apply(site, "e1", changes, after=seq0 + len(changes), node_head=seq0 + len(changes),
                  rejected=0, now=T0, caught_up=True)


@pytest.fixture
def wei(archive: ArchiveStore, engine: Engine) -> str:
    _put(archive, "city-1", 1, patient("city-1", "pc"),
         encounter("city-1", "e1", "pc", T0 - dt.timedelta(days=400)),
         lab("city-1", "o1", "pc", "2823-3", 4.1, "mmol/L", T0))
    _put(archive, "county-a", 1, patient("county-a", "pa", local="A1"),
         encounter("county-a", "e2", "pa", T0 - dt.timedelta(days=10)))
    return PersonDirectory(engine).resolve("pc").person_id


def test_persons_resolve_from_either_id(archive: ArchiveStore, engine: Engine, wei: str) -> None:
    people = PersonDirectory(engine)
    by_person, by_record = people.resolve(wei), people.resolve("pa")
    assert by_person == by_record and by_person.records == (("city-1", "pc"), ("county-a", "pa"))
    with pytest.raises(NotFound, match="master patient index"):
        people.resolve("nobody")
    rows = archive.person_resources(list(by_person.records))
    assert [(r.site_id, r.resource_id) for r in rows] == [
        ("city-1", "pc"), ("city-1", "e1"), ("city-1", "o1"), ("county-a", "pa"),
        ("county-a", "e2")]
    assert [r.resource_id for r in archive.person_resources(list(by_person.records),
                                                            ["Encounter"])] == ["e1", "e2"]
    assert archive.person_resources([]) == []


def test_encounter_care_source(archive: ArchiveStore, engine: Engine, wei: str) -> None:
    people = PersonDirectory(engine)

    def source(days: int) -> EncounterCare:
        return EncounterCare(CareContext(engine, archive, people.records_of, days,
                                         now=lambda: T0))
    assert source(30).sites_caring_for(wei) == {"county-a"}
    assert source(500).sites_caring_for(wei) == {"city-1", "county-a"}
    assert source(5).sites_caring_for(wei) == set()


def test_consents_are_stored_and_read_as_rules(archive: ArchiveStore, engine: Engine,
                                               wei: str) -> None:
    people = PersonDirectory(engine)
    person = people.resolve(wei)
    body = {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/pa"},
            "provision": {"type": "permit", "provision": [{"type": "deny", "actor": [{
                "role": {"text": "custodian"},
                "reference": {"reference": "Organization/city-1"}}]}]}}
    parsed = parse_consent(json.dumps(body).encode(), SITES)
    cid = people.record_consent(person, parsed, recorded_by="dr.li", now=T0)
    assert people.get_consent(cid)["id"] == cid
    (rule,) = people.consent_rules(person)
    assert rule.sites == {"city-1"} and rule.consent_id == cid
    inactive = parse_consent(json.dumps(body | {"status": "inactive"}).encode(), SITES)
    people.record_consent(person, inactive, recorded_by="dr.li", now=T0)
    assert len(people.consent_rules(person)) == 1
    with pytest.raises(NotFound):
        people.get_consent("nope")


def test_export_jobs_are_claimed_once_and_taken_over(sites: GatewayStore,
                                                     engine: Engine) -> None:
    jobs = ExportStore(engine)
    req = ExportRequest.parse([("cohort-site", "city-1")], SITES, "http://gw/fhir/Patient/$export")
    job_id = jobs.create(req, requested_by="admin", site="city-1", now=T0)
    first = jobs.claim("replica-a", T0)
    assert first is not None and first.job_id == job_id and first.status == "running"
    assert jobs.claim("replica-b", T0 + dt.timedelta(seconds=5)) is None   # lease held
    assert jobs.renew(job_id, "replica-a", T0 + dt.timedelta(seconds=10))
    assert jobs.claim("replica-b", T0 + dt.timedelta(seconds=30)) is None
    # replica-a goes silent; after its lease lapses replica-b takes over and finishes
    taken = jobs.claim("replica-b", T0 + dt.timedelta(minutes=5))
    assert taken is not None and taken.job_id == job_id
    assert not jobs.renew(job_id, "replica-a", T0 + dt.timedelta(minutes=5))
    assert not jobs.finish(job_id, "replica-a", {"Patient": [b"{}"]}, [], T0)
    assert jobs.finish(job_id, "replica-b", {"Patient": [b'{"a":1}', b'{"b":2}']}, ["x"], T0)
    done = jobs.get(job_id)
    assert done.status == "completed" and done.output == [
        {"type": "Patient", "part": 0, "count": 2}]
    assert jobs.file(job_id, "Patient", 0) == b'{"a":1}\n{"b":2}\n'
    jobs.cancel(job_id, T0)
    assert jobs.get(job_id).status == "cancelled"
    with pytest.raises(NotFound):
        jobs.file(job_id, "Patient", 0)
    for params, words in [([], "name a cohort"), ([("cohort-site", "nowhere")], "member"),
                          ([("cohort-site", "city-1"), ("_type", "Foo")], "_type"),
                          ([("cohort-site", "city-1"), ("_since", "2020")], "_since")]:
        with pytest.raises(InvalidInput, match=words):
            ExportRequest.parse(params, SITES, "u")


def test_encounter_care_answers_for_one_site(archive: ArchiveStore, engine: Engine,
                                             wei: str) -> None:
    people = PersonDirectory(engine)
    source = EncounterCare(CareContext(engine, archive, people.records_of, 30,
                                       now=lambda: T0))
    assert source.cares(wei, "county-a") and not source.cares(wei, "city-1")
    assert not source.cares(wei, "county-b")                 # holds no record of the person
    # the one recent visit arrived first, and 25 old ones after it: still found
    _put(archive, "city-1", 10, encounter("city-1", "recent", "pc", T0 - dt.timedelta(days=3)),
         *(encounter("city-1", f"old{i}", "pc", T0 - dt.timedelta(days=900 + i))
           for i in range(25)))
    assert source.cares(wei, "city-1")
    assert source.sites_caring_for(wei) == {"city-1", "county-a"}


def test_a_records_stamp_moves_with_every_change_and_the_index_cache_follows(
        archive: ArchiveStore, engine: Engine, wei: str) -> None:
    from federation.archive.index_cache import IndexCache

    refs = list(PersonDirectory(engine).resolve(wei).records)
    cache = IndexCache(max_rows=100)

    def index() -> list[str]:
        got = cache.get(refs, None, lambda: archive.person_stamp(refs),
                        lambda: archive.person_index(refs))
        return [got.rows[i][2] for i in got.kept]

    first = index()
    assert first == ["pc", "e1", "o1", "pa", "e2"] and (cache.hits, cache.misses) == (0, 1)
    assert index() == first and cache.hits == 1               # unchanged: kept
    stamp = archive.person_stamp(refs)
    # a replayed batch changes nothing, so the stamp stays
    _put(archive, "county-a", 1, patient("county-a", "pa", local="A1"))
    assert archive.person_stamp(refs) == stamp and index() == first and cache.hits == 2
    # a new resource, a new version, a tombstone: each moves the stamp and is seen
    _put(archive, "county-a", 3, lab("county-a", "o2", "pa", "2823-3", 3.9, "mmol/L", T0))
    assert index() == first + ["o2"]
    _put(archive, "city-1", 4, lab("city-1", "o1", "pc", "2823-3", 4.4, "mmol/L", T0))
    assert archive.person_stamp(refs) != stamp and index() == ["pc", "e1", "o1", "pa", "e2", "o2"]
    archive.apply("county-a", "e1", [StoredChange("Observation", "o2", 9, True, "pa", None)],
                  after=9, node_head=9, rejected=0, now=T0, caught_up=True)
    assert index() == ["pc", "e1", "o1", "pa", "e2"] and cache.misses == 4
    # bounded: a record larger than the cache is answered, and not kept
    small = IndexCache(max_rows=3)
    assert len(small.get(refs, None, lambda: archive.person_stamp(refs),
                         lambda: archive.person_index(refs)).rows) == 5
    small.get(refs, None, lambda: archive.person_stamp(refs), lambda: archive.person_index(refs))
    assert small.hits == 0 and small.misses == 2
