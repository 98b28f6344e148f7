"""Persons as the archive reads them: an id resolved through the EMPI to the person's
site records, and the person's recorded Consents.

An archive read names a person either by the EMPI person id (``urn:federation:empi:person``)
or by any site's Patient id (FHIR ids are uuid5 of site + local key, so unique across
sites); both resolve to the person and every site record linked to them. A person merged
away resolves to the survivor.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel import col, select

from federation.archive.access import ConsentRule
from federation.archive.consent import ParsedConsent, rules_of
from federation.errors import NotFound
from federation.store.gateway_store import StoreSessions
from federation.store.models import ArchiveConsent, IdentityRecord, Site

__all__ = ["Person", "PersonDirectory"]

_MAX_MERGES = 20
#: (person id, merged into): a person by id, and the person a site record is linked to
_PERSON = text("SELECT person_id, merged_into FROM identity_person WHERE person_id = :id")
_PERSON_OF_RECORD = text(
    "SELECT p.person_id, p.merged_into FROM identity_record r JOIN identity_person p "
    "ON p.person_id = r.person_id WHERE r.record_id = :id AND r.state != 'retired'")
_RECORDS = text("SELECT site_id, record_id FROM identity_record "
                "WHERE person_id = :person AND state = 'linked'")


@dataclass(frozen=True, slots=True)
class Person:
    person_id: str
    records: tuple[tuple[str, str], ...]       # (site id, Patient id), sorted

    @property
    def sites(self) -> set[str]:
        return {site for site, _ in self.records}

    def record_at(self, site_id: str) -> str | None:
        return next((pid for site, pid in self.records if site == site_id), None)


class PersonDirectory(StoreSessions):
    def resolve(self, some_id: str) -> Person:
        """The person an EMPI person id or a site Patient id names; NotFound otherwise.
        (Every archive read starts here: plain SQL, a few index lookups.)"""
        with self._read() as s:
            db = s.connection()
            person = db.execute(_PERSON, {"id": some_id}).first()
            if person is None:
                person = db.execute(_PERSON_OF_RECORD, {"id": some_id}).first()
            for _ in range(_MAX_MERGES):
                if person is None or person[1] is None:
                    break
                person = db.execute(_PERSON, {"id": person[1]}).first()
            if person is None:
                raise NotFound(f"no person and no patient record '{some_id}' is known to the "
                               "master patient index")
            return Person(person[0], self._records(s, person[0]))

    def records_of(self, person_id: str) -> list[tuple[str, str]]:
        with self._read() as s:
            return list(self._records(s, person_id))

    def person_of(self, site_id: str, record_id: str) -> str | None:
        with self._read() as s:
            row = s.get(IdentityRecord, (site_id, record_id))
            return row.person_id if row is not None and row.state != "retired" else None

    @staticmethod
    def _records(s, person_id: str) -> tuple[tuple[str, str], ...]:
        rows = s.connection().execute(_RECORDS, {"person": person_id})
        return tuple(sorted((site, rid) for site, rid in rows))

    def site_ids(self) -> set[str]:
        with self._read() as s:
            return set(s.exec(select(Site.site_id)).all())

    # ------------------------------------------------------------------ consent

    def record_consent(self, person: Person, parsed: ParsedConsent, *, recorded_by: str,
                       now: dt.datetime) -> str:
        """Store a validated Consent for ``person``; returns its new id."""
        consent_id = str(uuid.uuid4())
        site, record = next(((site, rid) for site, rid in person.records
                             if rid == parsed.patient_record), ("", parsed.patient_record or ""))
        body = dict(parsed.body, id=consent_id)
        with self._write() as s:
            s.add(ArchiveConsent(consent_id=consent_id, person_id=person.person_id,
                                 site_id=site, record_id=record, status=parsed.status,
                                 body=json.dumps(body, ensure_ascii=False).encode(),
                                 recorded_at=now, recorded_by=recorded_by[:200]))
        return consent_id

    def consent_rules(self, person: Person) -> list[ConsentRule]:
        """The exclusions of every active Consent recorded for the person or any of their
        site records (so a Consent survives the EMPI merging or re-linking records)."""
        records = [rid for _, rid in person.records]
        with self._read() as s:
            rows = s.exec(select(ArchiveConsent).where(
                col(ArchiveConsent.status) == "active",
                (col(ArchiveConsent.person_id) == person.person_id)
                | col(ArchiveConsent.record_id).in_(records))).all()
            sites = set(s.exec(select(Site.site_id)).all()) if rows else set()
            bodies = [(r.consent_id, json.loads(r.body)) for r in rows]
        rules: list[ConsentRule] = []
        for consent_id, body in bodies:
            rules += rules_of(body, sites, consent_id=consent_id)
        return rules

    def get_consent(self, consent_id: str) -> dict:
        with self._read() as s:
            row = s.get(ArchiveConsent, consent_id)
            if row is None:
                raise NotFound(f"Consent/{consent_id} does not exist")
            return json.loads(row.body)
