"""The EMPI on the gateway store: sessions around :class:`IdentityIndex`, PIX and PDQ.

The archive links every Patient a node's change feed brings inside the transaction that
stores it (``ArchiveStore.apply``); people's decisions
and the interfaces (PIXm, PDQm, the CLI) come through :class:`IdentityStore`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlmodel import Session, col

from federation.errors import InvalidInput, NotFound, UnknownSite
from federation.fhir_systems import (
    RESIDENT_ID_SYSTEM,
    SITE_URN_PREFIX,
    local_patient_id_system,
    site_urn,
)
from federation.identity.blocking import key_hash
from federation.identity.features import Features, extract
from federation.identity.index import IdentityIndex, LinkOutcome, RecordRef, golden
from federation.identity.model import LinkageModel
from federation.security.privacy import FieldCipher
from federation.store.gateway_store import StoreSessions
from federation.store.models import (
    IdentityBlock,
    IdentityEvent,
    IdentityPerson,
    IdentityRecord,
    IdentityReview,
    Site,
)

__all__ = ["IdentityStore", "PersonView", "ReviewItem", "ReviewPair", "StoredRecord",
           "patient_fields"]

#: how many merged-away person ids :meth:`IdentityStore.ever_linked` follows at most
_MAX_ALIASES = 200


def patient_fields(resource: Mapping[str, Any]) -> tuple[dict[str, object], str | None]:
    """Demographics of a FHIR Patient as the EMPI's input columns, and the site's own
    patient number (from the identifier whose system is the site's patient-id system)."""
    names = resource.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "official"), names[0])
    given = " ".join(name.get("given") or []) or None
    ids = resource.get("identifier") or []
    national = next((i.get("value") for i in ids if i.get("system") == RESIDENT_ID_SYSTEM), None)
    local = next((i.get("value") for i in ids
                  if str(i.get("system", "")).endswith(":patient-id")), None)
    phone = next((t.get("value") for t in resource.get("telecom") or []
                  if t.get("system") == "phone"), None)
    address = (resource.get("address") or [{}])[0]
    address_text = address.get("text") or " ".join(
        [*(address.get("line") or []), address.get("city") or "", address.get("district") or "",
         address.get("state") or ""]).strip() or None
    return {"name": name.get("text"), "family_name": name.get("family"), "given_name": given,
            "sex": resource.get("gender"), "birth_date": resource.get("birthDate"),
            "national_id": national, "phone": phone, "address": address_text,
            "postcode": address.get("postalCode")}, local


@dataclass(frozen=True, slots=True)
class ReviewItem:
    id: int
    record: RecordRef
    candidate_person_id: str
    candidate: RecordRef
    weight: float
    reason: str
    contributions: list[dict[str, object]]
    status: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One site record as the EMPI holds it (features decrypted): for reviewers only."""

    ref: RecordRef
    local_id: str | None
    person_id: str | None
    state: str
    pinned: bool
    features: Features


@dataclass(frozen=True, slots=True)
class ReviewPair:
    item: ReviewItem
    record: StoredRecord
    candidate: StoredRecord
    model: LinkageModel


@dataclass(frozen=True, slots=True)
class PersonView:
    person_id: str
    merged_into: str | None
    records: list[dict[str, object]]      # site_id, record_id, local_id, state
    golden: dict[str, object]
    history: list[dict[str, object]]


class IdentityStore(StoreSessions):
    def __init__(self, engine: Any, model: LinkageModel | None = None, *,
                 cipher: FieldCipher | None = None) -> None:
        super().__init__(engine)
        self.index = IdentityIndex(model, cipher=cipher)

    # ------------------------------------------------------------------ linking

    def link(self, site_id: str, record_id: str, fields: Mapping[str, object], *,
             local_id: str | None = None) -> LinkOutcome:
        with self._write() as s:
            _require_site(s, site_id)
            return self.index.link(s, site_id, record_id, fields, local_id=local_id)

    # ------------------------------------------------------------------ review

    def review_queue(self, *, status: str = "open", limit: int = 100,
                     offset: int = 0) -> list[ReviewItem]:
        """Review items of ``status``, the strongest candidates first (by the indexed
        status, then weight)."""
        with self._read() as s:
            rows = s.execute(select(IdentityReview).where(col(IdentityReview.status) == status)
                             .order_by(col(IdentityReview.weight).desc(),
                                       col(IdentityReview.id)).offset(offset).limit(limit)
                             ).scalars().all()
            return [_item(r) for r in rows]

    def review_count(self, *, status: str = "open") -> int:
        with self._read() as s:
            return int(s.execute(select(func.count()).select_from(IdentityReview).where(
                col(IdentityReview.status) == status)).scalar_one())

    def review_pair(self, review_id: int) -> ReviewPair:
        """A review item with both records as the EMPI holds them (decrypted features),
        for a reviewer to compare side by side; NotFound for an unknown item."""
        with self._read() as s:
            row = s.get(IdentityReview, review_id)
            if row is None:
                raise NotFound(f"review item {review_id} does not exist")
            item = _item(row)
            records = []
            for ref in (item.record, item.candidate):
                rec = s.get(IdentityRecord, (ref.site_id, ref.record_id))
                if rec is None:
                    raise NotFound(f"the EMPI no longer holds record {ref} of review item "
                                   f"{review_id}")
                records.append(StoredRecord(
                    ref, rec.local_id, rec.person_id, rec.state, rec.pinned,
                    self.index.load_features(rec.site_id, rec.record_id, rec.features)))
            return ReviewPair(item, records[0], records[1], self.index.model(s))

    def accept(self, review_id: int, *, actor: str) -> str:
        with self._write() as s:
            return self.index.accept(s, review_id, actor=actor)

    def reject(self, review_id: int, *, actor: str) -> None:
        with self._write() as s:
            self.index.reject(s, review_id, actor=actor)

    def merge(self, keep: str, gone: str, *, actor: str) -> str:
        with self._write() as s:
            return self.index.merge(s, keep, gone, actor=actor)

    def link_records(self, a: RecordRef, b: RecordRef, *, actor: str) -> str:
        with self._write() as s:
            return self.index.link_records(s, a, b, actor=actor)

    def split(self, ref: RecordRef, *, actor: str) -> str:
        with self._write() as s:
            return self.index.split(s, ref, actor=actor)

    # ------------------------------------------------------------------ model

    def model(self) -> LinkageModel:
        with self._read() as s:
            return self.index.model(s)

    def save_model(self, model: LinkageModel, *, actor: str, note: str = "") -> int:
        with self._write() as s:
            return self.index.save_model(s, model, actor=actor, note=note)

    def all_features(self) -> list[Features]:
        with self._read() as s:
            rows = s.execute(select(IdentityRecord.site_id, IdentityRecord.record_id,
                                    IdentityRecord.features).where(
                col(IdentityRecord.state) == "linked")).all()
            return [self.index.load_features(a, b, c) for a, b, c in rows]

    def decisions(self) -> dict[tuple[str, str], str]:
        """Each linked record's current person (for ``tune`` previews)."""
        with self._read() as s:
            rows = s.execute(select(IdentityRecord.site_id, IdentityRecord.record_id,
                                    IdentityRecord.person_id).where(
                col(IdentityRecord.state) == "linked")).all()
            return {(a, b): str(c) for a, b, c in rows}

    def counts(self) -> dict[str, int]:
        with self._read() as s:
            by_state = dict(s.execute(select(IdentityRecord.state, func.count())
                                      .group_by(IdentityRecord.state)).all())
            persons = s.execute(select(func.count(func.distinct(IdentityRecord.person_id)))
                                .where(col(IdentityRecord.state) == "linked")).scalar_one()
            review = s.execute(select(func.count()).select_from(IdentityReview).where(
                col(IdentityReview.status) == "open")).scalar_one()
            return {"records": sum(by_state.values()), "linked": by_state.get("linked", 0),
                    "blank": by_state.get("blank", 0), "retired": by_state.get("retired", 0),
                    "persons": int(persons), "review_open": int(review)}

    # ------------------------------------------------------------------ PIX / PDQ / person

    def site_ids(self) -> set[str]:
        """The consortium's member sites (identifier systems name them)."""
        with self._read() as s:
            return set(s.execute(select(Site.site_id)).scalars().all())

    def person_of(self, ref: RecordRef) -> str | None:
        with self._read() as s:
            row = s.get(IdentityRecord, (ref.site_id, ref.record_id))
            return row.person_id if row else None

    def find_record(self, system: str, value: str) -> RecordRef:
        """The record a PIX source identifier names: a site's patient number
        (``urn:federation:site:<id>:patient-id``), a resident ID, or a FHIR Patient id
        (system ``urn:federation:site:<id>``)."""
        with self._read() as s:
            if system == RESIDENT_ID_SYSTEM:
                refs = s.execute(select(IdentityBlock.site_id, IdentityBlock.record_id).where(
                    col(IdentityBlock.key) == key_hash("id", _resident_key(value),
                                                       self.index.secret))).all()
            else:
                site = site_of_system(system)
                if site is None:
                    raise InvalidInput(f"unknown identifier system '{system}'; use "
                                       f"{SYSTEMS_HINT}")
                site_id, kind = site
                column = (IdentityRecord.local_id if kind == "patient-id"
                          else IdentityRecord.record_id)
                refs = s.execute(select(IdentityRecord.site_id, IdentityRecord.record_id).where(
                    col(IdentityRecord.site_id) == site_id, col(column) == value)).all()
            if not refs:
                raise NotFound("no patient record carries that identifier")
            return RecordRef(*refs[0])

    def cross_references(self, person_id: str) -> list[dict[str, object]]:
        with self._read() as s:
            rows = s.execute(select(IdentityRecord).where(
                col(IdentityRecord.person_id) == person_id).order_by(
                IdentityRecord.site_id, IdentityRecord.record_id)).scalars().all()
            return [{"site_id": r.site_id, "record_id": r.record_id, "local_id": r.local_id}
                    for r in rows]

    def search(self, query: Mapping[str, str], *, limit: int = 50) -> list[dict[str, object]]:
        """PDQ: records matching the demographics, via the blocking index (never a scan),
        ranked by match weight; each with its person id. Needs a resident ID, a phone, or
        a name with a birth date."""
        probe = extract({**query, "site": "?", "record_id": "?"})
        if not (probe.national_id or probe.phone or probe.other_id
                or (probe.name_key and probe.birth_date)):
            raise InvalidInput("a patient search needs an identifier, a phone, or a name "
                               "together with a birth date")
        with self._read() as s:
            model = self.index.model(s)
            candidates = self.index.candidates(s, model, probe)
            if probe.name_key and not probe.birth_date:
                candidates = [c for c in candidates if c.score.levels[1] >= 3]
            # an identifier or phone asked for exactly is a hit whatever the weight
            wanted = [c for c in candidates if c.score.weight >= model.lower
                      or (probe.national_id and c.score.levels[4] == 1)
                      or (probe.phone and c.score.levels[6] == 2)]
            wanted.sort(key=lambda c: -c.score.weight)
            out = []
            for c in wanted[:limit]:
                row = s.get(IdentityRecord, (c.ref.site_id, c.ref.record_id))
                out.append({"site_id": c.ref.site_id, "record_id": c.ref.record_id,
                            "local_id": row.local_id if row else None,
                            "person_id": c.person_id, "weight": round(c.score.weight, 2),
                            "probability": round(c.score.probability, 4)})
            return out

    def ever_linked(self, person_id: str) -> tuple[set[str], set[RecordRef]]:
        """Every person id that stood for this person (itself and those merged into it,
        transitively) and every record that was ever linked to one of them — what the
        exchange log may have hashed when it recorded an exchange about them. Read from
        the indexed history (``identity_event.person_id``), never a scan."""
        with self._read() as s:
            if s.get(IdentityPerson, person_id) is None:
                raise NotFound(f"person '{person_id}' does not exist")
            persons, records, todo = {person_id}, set(), [person_id]
            while todo and len(persons) < _MAX_ALIASES:
                events = s.execute(select(IdentityEvent.site_id, IdentityEvent.record_id,
                                          IdentityEvent.previous_person_id).where(
                    col(IdentityEvent.person_id).in_(todo))).all()
                todo = []
                for site_id, record_id, previous in events:
                    if site_id and record_id:
                        records.add(RecordRef(site_id, record_id))
                    if not previous or previous in persons:
                        continue
                    # a merge (no record), or the last record moving out of a person that
                    # was then retired into this one: either way the same human
                    gone = s.get(IdentityPerson, previous)
                    if gone is not None and gone.merged_into in persons:
                        persons.add(previous)
                        todo.append(previous)
            current = s.execute(select(IdentityRecord.site_id, IdentityRecord.record_id).where(
                col(IdentityRecord.person_id) == person_id)).all()
            records.update(RecordRef(a, b) for a, b in current)
            return persons, records

    def person(self, person_id: str) -> PersonView:
        with self._read() as s:
            person = s.get(IdentityPerson, person_id)
            if person is None:
                raise NotFound(f"person '{person_id}' does not exist")
            rows = s.execute(select(IdentityRecord, Site.tier).join(
                Site, col(Site.site_id) == col(IdentityRecord.site_id), isouter=True).where(
                col(IdentityRecord.person_id) == person_id)).all()
            feats = [(self.index.load_features(r.site_id, r.record_id, r.features),
                      r.updated_at, tier or "") for r, tier in rows]
            events = s.execute(select(IdentityEvent).where(or_(
                col(IdentityEvent.person_id) == person_id,
                col(IdentityEvent.previous_person_id) == person_id)).order_by(
                col(IdentityEvent.id))).scalars().all()
            return PersonView(
                person_id=person_id, merged_into=person.merged_into,
                records=[{"site_id": r.site_id, "record_id": r.record_id,
                          "local_id": r.local_id, "state": r.state, "pinned": r.pinned}
                         for r, _ in rows],
                golden=golden(feats),
                history=[{"at": e.at.isoformat(), "action": e.action,
                          "record": f"{e.site_id}/{e.record_id}" if e.site_id else None,
                          "person_id": e.person_id, "previous": e.previous_person_id,
                          "weight": e.weight, "actor": e.actor, "detail": json.loads(e.detail)}
                         for e in events])


def _item(r: IdentityReview) -> ReviewItem:
    return ReviewItem(id=int(r.id or 0), record=RecordRef(r.site_id, r.record_id),
                      candidate_person_id=r.candidate_person_id,
                      candidate=RecordRef(r.candidate_site_id, r.candidate_record_id),
                      weight=r.weight, reason=r.reason,
                      contributions=json.loads(r.detail).get("contributions", []),
                      status=r.status, created_at=r.created_at)


def _require_site(s: Session, site_id: str) -> None:
    if s.get(Site, site_id) is None:
        raise UnknownSite(f"site '{site_id}' is not a member of the consortium")


def _resident_key(value: str) -> str:
    f = extract({"national_id": value})
    if f.national_id is None:
        raise InvalidInput("the resident ID is not a valid GB 11643 number")
    return f.national_id


SYSTEMS_HINT = (f"{RESIDENT_ID_SYSTEM}, {local_patient_id_system('<site>')} "
                f"(the site's own patient number) or {site_urn('<site>')} (its FHIR Patient id)")


def site_of_system(system: str) -> tuple[str, str] | None:
    """(site, 'patient-id' | 'fhir-id') of a site-scoped patient identifier system, None
    when ``system`` is not site-scoped; InvalidInput for another site-scoped system
    (encounter ids, diagnosis codes …)."""
    if not system.startswith(SITE_URN_PREFIX):
        return None
    site_id, _, kind = system[len(SITE_URN_PREFIX):].partition(":")
    if not site_id or kind not in ("", "patient-id"):
        raise InvalidInput(f"identifier system '{system}' does not identify patients; "
                           f"use {SYSTEMS_HINT}")
    return site_id, kind or "fhir-id"
