"""The online master patient index: records linked as they arrive, in the caller's
transaction, plus the review queue and the administrators' merge / link / split.

Invariants (tests in ``tests/identity`` prove each):

* a record belongs to exactly one person at any time — except all-blank records, which
  are stored (state ``blank``) and never linked to anyone;
* a record whose best candidates belong to two different persons is never used to merge
  them: it becomes its own person and each candidate goes to review;
* a reviewer's "not the same person" (``identity_no_match``) is never undone by
  automatic matching, and a record a person placed (``pinned``) is never moved by it;
* every change of a record's person is an ``identity_event`` row — the full history;
* the online path never scans: candidates come from the ``identity_block`` index by
  hashed key, one indexed query, blocks larger than ``max_block`` skipped.

Concurrency: before looking for candidates a transaction takes PostgreSQL advisory
locks (``pg_advisory_xact_lock``) on the hashed blocking keys of every record it links,
in sorted order, so two sites' copies of one person arriving at once are linked one
after the other and the second finds the first. SQLite serialises writers anyway.

Golden demographics (:func:`golden`) are *derived* on read by survivorship rules from
the person's records; no site's record is ever overwritten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, or_, select, text, update
from sqlmodel import Session, col

from federation.errors import ConfigError, Conflict, InvalidInput, NotFound
from federation.identity.blocking import hashed_keys
from federation.identity.features import Features, extract
from federation.identity.model import LINK, REVIEW, LinkageModel, Score
from federation.security.privacy import TEXT_PREFIX, FieldCipher
from federation.store.database import keys_in
from federation.store.models import (
    IdentityBlock,
    IdentityEvent,
    IdentityModel,
    IdentityNoMatch,
    IdentityPerson,
    IdentityRecord,
    IdentityReview,
)

__all__ = ["Candidate", "IdentityIndex", "LinkOutcome", "RecordRef", "golden"]

MAX_BLOCK = 500
EMPI = "empi"


@dataclass(frozen=True, slots=True, order=True)
class RecordRef:
    site_id: str
    record_id: str

    def __str__(self) -> str:
        return f"{self.site_id}/{self.record_id}"


@dataclass(frozen=True, slots=True)
class Candidate:
    ref: RecordRef
    person_id: str
    score: Score


@dataclass(frozen=True, slots=True)
class LinkOutcome:
    ref: RecordRef
    person_id: str | None
    outcome: str            # linked | new | review | blank | unchanged
    weight: float | None = None


#: features encrypted at rest when the index has a cipher (resident ID, phone, other ID)
PROTECTED = ("national_id", "phone", "other_id")


def _digest(features: Features) -> str:
    body = json.dumps(features.as_json(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _aad(site_id: str, record_id: str, name: str) -> str:
    return f"identity_record/{site_id}/{record_id}/{name}"


def _new_person_id() -> str:
    return f"P{uuid.uuid4().hex[:20]}"


def _pair(a: RecordRef, b: RecordRef) -> tuple[RecordRef, RecordRef]:
    return (a, b) if a <= b else (b, a)


class IdentityIndex:
    """EMPI operations on an open session; the caller owns the transaction.

    With a ``cipher`` (:class:`~federation.security.privacy.FieldCipher`) the resident ID,
    phone and other identifier in each record's stored features are AES-GCM encrypted and
    blocking keys and digests are keyed hashes; matching works on the decrypted features,
    so linkage decisions are the same either way.
    """

    def __init__(self, model: LinkageModel | None = None, *, max_block: int = MAX_BLOCK,
                 cipher: FieldCipher | None = None) -> None:
        self._model = model
        self.max_block = max_block
        #: the newest stored model, parsed once per version (another replica may store
        #: a newer one at any time, so the version is read in every transaction)
        self._cached: tuple[int, LinkageModel] | None = None
        self.cipher = cipher
        self.secret = cipher.index_key if cipher is not None else None

    # ------------------------------------------------------------------ features at rest

    def dump_features(self, f: Features) -> str:
        data = f.as_json()
        if self.cipher is not None:
            for name in PROTECTED:
                if data.get(name):
                    data[name] = self.cipher.encrypt_text(str(data[name]),
                                                          _aad(f.site, f.record_id, name))
        return json.dumps(data, ensure_ascii=False)

    def load_features(self, site_id: str, record_id: str, text_: str) -> Features:
        data = json.loads(text_)
        for name in PROTECTED:
            value = data.get(name)
            if isinstance(value, str) and value.startswith(TEXT_PREFIX):
                if self.cipher is None:
                    raise ConfigError("the EMPI's records are encrypted; configure the "
                                      "privacy key ring (privacy_keyring) to read them")
                data[name] = self.cipher.decrypt_text(value, _aad(site_id, record_id, name))
        return Features.from_json(site_id, record_id, data)

    def keys(self, f: Features) -> list[int]:
        return hashed_keys(f, self.secret)

    def digest(self, features: Features) -> str:
        """What tells an unchanged record: a keyed hash when the index has a cipher."""
        if self.cipher is None:
            return _digest(features)
        body = json.dumps(features.as_json(), sort_keys=True, ensure_ascii=False).encode()
        return self.cipher.keyed_digest(body)

    # ------------------------------------------------------------------ model

    def model(self, s: Session) -> LinkageModel:
        if self._model is not None:
            return self._model
        version = s.execute(select(func.max(IdentityModel.version))).scalar_one()
        if version is None:
            return LinkageModel.default()
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        params = s.execute(select(IdentityModel.params).where(
            col(IdentityModel.version) == version)).scalar_one()
        model = LinkageModel.from_json(json.loads(params))
        self._cached = (int(version), model)
        return model

    @staticmethod
    def save_model(s: Session, model: LinkageModel, *, actor: str, note: str = "") -> int:
        row = IdentityModel(created_at=_now(), params=json.dumps(model.as_json()), note=note,
                            actor=actor)
        s.add(row)
        s.flush()
        return int(row.version or 0)

    # ------------------------------------------------------------------ linking

    def lock_keys(self, s: Session, features: Iterable[Features]) -> None:
        """Serialise concurrent linkers that could meet: advisory locks on every key."""
        if s.get_bind().dialect.name != "postgresql":
            return
        keys = sorted({h for f in features if not f.blank for h in self.keys(f)})
        if keys:    # one round trip, taken in key order (two linkers never wait in a circle)
            s.execute(text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) "
                           "AS k ORDER BY k"), {"keys": keys})

    def link_many(self, s: Session, site_id: str,
                  records: Sequence[tuple[str, str | None, Mapping[str, object]]],
                  *, now: dt.datetime | None = None) -> list[LinkOutcome]:
        """Link (record_id, local_id, demographics) of one site, in one transaction."""
        now = now or _now()
        extracted = [(rid, local, extract({**fields, "site": site_id, "record_id": rid}))
                     for rid, local, fields in records]
        self.lock_keys(s, (f for _, _, f in extracted))
        model = self.model(s)
        return [self._link(s, model, f, local, now) for _, local, f in extracted]

    def link(self, s: Session, site_id: str, record_id: str, fields: Mapping[str, object],
             *, local_id: str | None = None, now: dt.datetime | None = None) -> LinkOutcome:
        return self.link_many(s, site_id, [(record_id, local_id, fields)], now=now)[0]

    def retire(self, s: Session, site_id: str, record_id: str, *,
               now: dt.datetime | None = None) -> None:
        """The site deleted the record: it leaves its person (history kept)."""
        row = s.get(IdentityRecord, (site_id, record_id))
        if row is None or row.state == "retired":
            return
        s.execute(delete(IdentityBlock).where(col(IdentityBlock.site_id) == site_id,
                                              col(IdentityBlock.record_id) == record_id))
        previous = row.person_id
        row.state, row.person_id, row.updated_at = "retired", None, now or _now()
        s.add(row)
        self._event(s, "retire", RecordRef(site_id, record_id), None, previous, None, EMPI, {})
        self._close_reviews(s, RecordRef(site_id, record_id), "record retired")

    def _link(self, s: Session, model: LinkageModel, f: Features, local_id: str | None,
              now: dt.datetime) -> LinkOutcome:
        ref = RecordRef(f.site, f.record_id)
        if not f.site or not f.record_id:
            raise InvalidInput("a record to link needs its site and record id")
        digest = self.digest(f)
        row = s.get(IdentityRecord, (f.site, f.record_id))
        if row is not None and row.digest == digest and row.state != "retired":
            return LinkOutcome(ref, row.person_id, "unchanged")
        features_json = self.dump_features(f)
        arriving = row is None      # no reviewer can have said "not the same" about it yet
        if row is None:
            row = IdentityRecord(site_id=f.site, record_id=f.record_id, local_id=local_id,
                                 person_id=None, state="linked", pinned=False,
                                 features=features_json, digest=digest, updated_at=now)
        else:
            row.features, row.digest, row.updated_at = features_json, digest, now
            row.local_id = local_id or row.local_id
            s.execute(delete(IdentityBlock).where(col(IdentityBlock.site_id) == f.site,
                                                  col(IdentityBlock.record_id) == f.record_id))
        if f.blank:
            previous = row.person_id
            row.state, row.person_id = "blank", None
            s.add(row)
            self._event(s, "blank", ref, None, previous, None, EMPI,
                        {"problems": [p.code for p in f.problems]})
            return LinkOutcome(ref, None, "blank")
        keys = self.keys(f)
        stays = row.person_id is not None and (row.pinned or self._members(s, row.person_id) > 1)
        if stays:
            # a person placed it, or others share its person: new data does not move it
            row.state = "linked"
            s.add(row)
            s.flush()
            self._add_blocks(s, ref, keys)
            return LinkOutcome(ref, row.person_id, "unchanged")
        candidates = self.candidates(s, model, f, keys)
        previous = row.person_id
        outcome, person_id, weight, detail = self._decide(s, model, f, ref, candidates,
                                                          arriving=arriving)
        if person_id is None:
            person_id = previous or self._create_person(s, now)
        row.person_id, row.state = person_id, "linked"
        s.add(row)
        s.flush()
        self._add_blocks(s, ref, keys)
        if previous != person_id:
            self._event(s, "auto-link" if outcome == "linked" else "new-person", ref,
                        person_id, previous, weight, EMPI, {
                            k: v for k, v in detail.items() if k != "review"} | {
                            "review": [{"person": c.person_id, "record": str(c.ref),
                                        "weight": round(c.score.weight, 2), "reason": why}
                                       for c, why in detail.get("review", ())]})  # type: ignore[attr-defined]
            if previous is not None and self._members(s, previous) == 0:
                s.execute(update(IdentityPerson).where(col(IdentityPerson.person_id) == previous)
                          .values(merged_into=person_id))
        if outcome == "review":
            for cand, reason in detail["review"]:  # type: ignore[union-attr]
                self._open_review(s, ref, cand, reason, model, now)
        return LinkOutcome(ref, person_id, outcome, weight)

    def _decide(self, s: Session, model: LinkageModel, f: Features, ref: RecordRef,
                candidates: list[Candidate], *, arriving: bool = False
                ) -> tuple[str, str | None, float | None, dict[str, object]]:
        """(outcome, person to link to or None for a new one, weight, detail)."""
        refused = (self._no_match_persons(s, ref, candidates) if candidates and not arriving
                   else set())
        best: dict[str, Candidate] = {}
        for c in candidates:
            if c.person_id in refused:
                continue        # a reviewer said no: never re-linked, never re-queued
            if c.person_id not in best or c.score.weight > best[c.person_id].score.weight:
                best[c.person_id] = c
        linked, review = [], []
        for person, c in best.items():
            decision = model.decide(c.score)
            if decision == LINK and self._id_conflict(s, f, person):
                decision = REVIEW
            if decision == LINK:
                linked.append(c)
            elif decision == REVIEW:
                review.append((c, ",".join(c.score.guards) or "uncertain"))
        if len(linked) == 1:
            c = linked[0]
            return "linked", c.person_id, c.score.weight, {
                "matched": str(c.ref), "levels": list(c.score.levels),
                "contributions": [x.as_json() for x in model.explain(c.score.levels)]}
        if len(linked) > 1:
            review = [(c, "matches-several-persons") for c in linked] + review
        if review:
            review.sort(key=lambda t: -t[0].score.weight)
            return "review", None, review[0][0].score.weight, {"review": review[:3]}
        return "new", None, None, {"candidates": len(candidates)}

    def candidates(self, s: Session, model: LinkageModel, f: Features,
                   keys: Sequence[int] | None = None) -> list[Candidate]:
        keys = list(keys if keys is not None else self.keys(f))
        if not keys:
            return []
        # one round trip: the members of every block not larger than max_block
        small = (select(IdentityBlock.key).where(col(IdentityBlock.key).in_(keys))
                 .group_by(IdentityBlock.key).having(func.count() <= self.max_block))
        refs = s.execute(select(IdentityBlock.site_id, IdentityBlock.record_id).where(
            col(IdentityBlock.key).in_(small)).distinct()).all()
        refs = [r for r in refs if (r[0], r[1]) != (f.site, f.record_id)]
        if not refs:
            return []
        rows = s.execute(select(IdentityRecord).where(
            keys_in((col(IdentityRecord.site_id), col(IdentityRecord.record_id)), refs),
            col(IdentityRecord.state) == "linked")).scalars().all()
        out = []
        for r in rows:
            other = self.load_features(r.site_id, r.record_id, r.features)
            out.append(Candidate(RecordRef(r.site_id, r.record_id), str(r.person_id),
                                 model.score(f, other)))
        return out

    def _no_match_persons(self, s: Session, ref: RecordRef,
                          candidates: list[Candidate]) -> set[str]:
        """Persons holding a record a reviewer said is not this one."""
        rows = s.execute(select(IdentityNoMatch).where(or_(
            (col(IdentityNoMatch.a_site_id) == ref.site_id)
            & (col(IdentityNoMatch.a_record_id) == ref.record_id),
            (col(IdentityNoMatch.b_site_id) == ref.site_id)
            & (col(IdentityNoMatch.b_record_id) == ref.record_id)))).scalars().all()
        others = {(r.b_site_id, r.b_record_id) if (r.a_site_id, r.a_record_id) == (
            ref.site_id, ref.record_id) else (r.a_site_id, r.a_record_id) for r in rows}
        if not others:
            return set()
        persons = s.execute(select(IdentityRecord.person_id).where(
            keys_in((col(IdentityRecord.site_id), col(IdentityRecord.record_id)), others)
        )).scalars().all()
        return {p for p in persons if p}

    def _id_conflict(self, s: Session, f: Features, person_id: str) -> bool:
        """The person already holds a valid resident ID other than this record's."""
        if not f.national_id:
            return False
        rows = s.execute(select(IdentityRecord.site_id, IdentityRecord.record_id,
                                IdentityRecord.features).where(
            col(IdentityRecord.person_id) == person_id)).all()
        ids = {self.load_features(a, b, c).national_id for a, b, c in rows}
        return bool(ids - {None, f.national_id})

    @staticmethod
    def _members(s: Session, person_id: str) -> int:
        return int(s.execute(select(func.count()).select_from(IdentityRecord).where(
            col(IdentityRecord.person_id) == person_id)).scalar_one())

    @staticmethod
    def _create_person(s: Session, now: dt.datetime) -> str:
        person = IdentityPerson(person_id=_new_person_id(), created_at=now)
        s.add(person)
        s.flush()
        return person.person_id

    @staticmethod
    def _add_blocks(s: Session, ref: RecordRef, keys: Sequence[int]) -> None:
        if not keys:
            return
        s.execute(insert(IdentityBlock), [
            {"key": key, "site_id": ref.site_id, "record_id": ref.record_id}
            for key in dict.fromkeys(keys)])

    @staticmethod
    def _event(s: Session, action: str, ref: RecordRef | None, person_id: str | None,
               previous: str | None, weight: float | None, actor: str,
               detail: Mapping[str, object]) -> None:
        s.add(IdentityEvent(at=_now(), action=action,
                            site_id=ref.site_id if ref else None,
                            record_id=ref.record_id if ref else None, person_id=person_id,
                            previous_person_id=previous, weight=weight, actor=actor,
                            detail=json.dumps(detail, ensure_ascii=False, default=str)))

    def _open_review(self, s: Session, ref: RecordRef, cand: Candidate, reason: str,
                     model: LinkageModel, now: dt.datetime) -> None:
        exists = s.execute(select(IdentityReview.id).where(
            col(IdentityReview.site_id) == ref.site_id,
            col(IdentityReview.record_id) == ref.record_id,
            col(IdentityReview.candidate_person_id) == cand.person_id,
            col(IdentityReview.status) == "open")).first()
        if exists:
            return
        detail = {"levels": list(cand.score.levels), "guards": list(cand.score.guards),
                  "contributions": [x.as_json() for x in model.explain(cand.score.levels)]}
        s.add(IdentityReview(site_id=ref.site_id, record_id=ref.record_id,
                             candidate_person_id=cand.person_id,
                             candidate_site_id=cand.ref.site_id,
                             candidate_record_id=cand.ref.record_id,
                             weight=round(cand.score.weight, 3), reason=reason,
                             detail=json.dumps(detail), status="open", created_at=now))

    @staticmethod
    def _close_reviews(s: Session, ref: RecordRef, why: str) -> None:
        s.execute(update(IdentityReview).where(
            col(IdentityReview.status) == "open",
            or_((col(IdentityReview.site_id) == ref.site_id)
                & (col(IdentityReview.record_id) == ref.record_id),
                (col(IdentityReview.candidate_site_id) == ref.site_id)
                & (col(IdentityReview.candidate_record_id) == ref.record_id)))
            .values(status="closed", decided_at=_now(), decided_by=f"{EMPI}: {why}"))

    # ------------------------------------------------------------------ people's decisions

    def accept(self, s: Session, review_id: int, *, actor: str) -> str:
        """The reviewer says: same person. The record joins the candidate's person."""
        item = self._open_item(s, review_id)
        ref = RecordRef(item.site_id, item.record_id)
        self.move(s, ref, item.candidate_person_id, actor=actor, action="review-accept",
                  detail={"review": review_id})
        item.status, item.decided_at, item.decided_by = "accepted", _now(), actor
        s.add(item)
        return item.candidate_person_id

    def reject(self, s: Session, review_id: int, *, actor: str) -> None:
        """The reviewer says: not the same person — remembered for good."""
        item = self._open_item(s, review_id)
        a, b = _pair(RecordRef(item.site_id, item.record_id),
                     RecordRef(item.candidate_site_id, item.candidate_record_id))
        if s.get(IdentityNoMatch, (a.site_id, a.record_id, b.site_id, b.record_id)) is None:
            s.add(IdentityNoMatch(a_site_id=a.site_id, a_record_id=a.record_id,
                                  b_site_id=b.site_id, b_record_id=b.record_id,
                                  at=_now(), actor=actor))
        item.status, item.decided_at, item.decided_by = "rejected", _now(), actor
        s.add(item)
        self._event(s, "review-reject", RecordRef(item.site_id, item.record_id),
                    self._record(s, RecordRef(item.site_id, item.record_id)).person_id, None,
                    item.weight, actor, {"review": review_id, "not": str(RecordRef(
                        item.candidate_site_id, item.candidate_record_id))})

    def link_records(self, s: Session, a: RecordRef, b: RecordRef, *, actor: str) -> str:
        """An administrator links two records by hand, whatever their data say: b joins
        a's person (with every other record of b's person only if b was alone)."""
        ra, rb = self._record(s, a), self._record(s, b)
        if ra.person_id is None or rb.person_id is None:
            raise Conflict("blank or retired records cannot be linked")
        self._check_no_match(s, [a], [b])
        self.move(s, b, ra.person_id, actor=actor, action="manual-link",
                  detail={"with": str(a)})
        return ra.person_id

    def merge(self, s: Session, keep: str, gone: str, *, actor: str) -> str:
        """An administrator merges person ``gone`` into ``keep``; every record moves."""
        if keep == gone:
            raise InvalidInput("a person cannot be merged with itself")
        for pid in (keep, gone):
            person = s.get(IdentityPerson, pid)
            if person is None or person.merged_into is not None:
                raise NotFound(f"person '{pid}' does not exist or was merged away")
        refs_keep, refs_gone = self.records_of(s, keep), self.records_of(s, gone)
        self._check_no_match(s, refs_keep, refs_gone)
        for ref in refs_gone:
            self.move(s, ref, keep, actor=actor, action="merge", detail={"from": gone},
                      retire_empty=False)
        s.execute(update(IdentityPerson).where(col(IdentityPerson.person_id) == gone)
                  .values(merged_into=keep))
        self._event(s, "merge", None, keep, gone, None, actor, {"records": len(refs_gone)})
        return keep

    def split(self, s: Session, ref: RecordRef, *, actor: str) -> str:
        """An administrator splits a wrongly linked record out to a new person of its own,
        and the split is remembered as "not the same" as the records it left."""
        row = self._record(s, ref)
        if row.person_id is None:
            raise Conflict(f"record {ref} is not linked to anyone")
        others = [r for r in self.records_of(s, row.person_id) if r != ref]
        if not others:
            raise Conflict(f"record {ref} is already its person's only record")
        person = self._create_person(s, _now())
        self.move(s, ref, person, actor=actor, action="split")
        for other in others:
            a, b = _pair(ref, other)
            if s.get(IdentityNoMatch, (a.site_id, a.record_id, b.site_id, b.record_id)) is None:
                s.add(IdentityNoMatch(a_site_id=a.site_id, a_record_id=a.record_id,
                                      b_site_id=b.site_id, b_record_id=b.record_id,
                                      at=_now(), actor=actor))
        return person

    def move(self, s: Session, ref: RecordRef, person_id: str, *, actor: str, action: str,
             detail: Mapping[str, object] | None = None, retire_empty: bool = True) -> None:
        row = self._record(s, ref)
        if row.state != "linked":
            raise Conflict(f"record {ref} is {row.state}; only linked records move")
        if s.get(IdentityPerson, person_id) is None:
            raise NotFound(f"person '{person_id}' does not exist")
        previous = row.person_id
        row.person_id, row.pinned, row.updated_at = person_id, True, _now()
        s.add(row)
        s.flush()
        self._event(s, action, ref, person_id, previous, None, actor, detail or {})
        self._close_reviews(s, ref, action)
        if retire_empty and previous and previous != person_id and not self._members(s, previous):
            s.execute(update(IdentityPerson).where(col(IdentityPerson.person_id) == previous)
                      .values(merged_into=person_id))

    def _check_no_match(self, s: Session, left: Sequence[RecordRef],
                        right: Sequence[RecordRef]) -> None:
        pairs = [_pair(a, b) for a in left for b in right]
        if not pairs:
            return
        found = s.execute(select(IdentityNoMatch).where(keys_in(
            (col(IdentityNoMatch.a_site_id), col(IdentityNoMatch.a_record_id),
             col(IdentityNoMatch.b_site_id), col(IdentityNoMatch.b_record_id)),
            [(a.site_id, a.record_id, b.site_id, b.record_id) for a, b in pairs])
        )).scalars().first()
        if found is not None:
            raise Conflict(
                f"a reviewer recorded that {found.a_site_id}/{found.a_record_id} and "
                f"{found.b_site_id}/{found.b_record_id} are not the same person "
                f"({found.actor}, {found.at:%Y-%m-%d}); that decision stands")

    @staticmethod
    def _open_item(s: Session, review_id: int) -> IdentityReview:
        item = s.get(IdentityReview, review_id, with_for_update=True)
        if item is None:
            raise NotFound(f"review item {review_id} does not exist")
        if item.status != "open":
            raise Conflict(f"review item {review_id} is already {item.status}")
        return item

    @staticmethod
    def _record(s: Session, ref: RecordRef) -> IdentityRecord:
        row = s.get(IdentityRecord, (ref.site_id, ref.record_id))
        if row is None:
            raise NotFound(f"the EMPI has no record {ref}")
        return row

    # ------------------------------------------------------------------ reading

    @staticmethod
    def records_of(s: Session, person_id: str) -> list[RecordRef]:
        rows = s.execute(select(IdentityRecord.site_id, IdentityRecord.record_id).where(
            col(IdentityRecord.person_id) == person_id).order_by(
            IdentityRecord.site_id, IdentityRecord.record_id)).all()
        return [RecordRef(a, b) for a, b in rows]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------- golden record

def golden(records: Sequence[tuple[Features, dt.datetime, str]]) -> dict[str, object]:
    """The person's golden demographics from (features, updated_at, site tier) of their
    records, by these survivorship rules, each value with the site(s) it came from:

    * resident ID — the valid ID most records carry (only validated IDs exist here);
    * name, sex, birth date — the value most records agree on; ties go to the record
      whose ID is valid, then to the higher-tier site (city > county > township), then
      to the most recently updated record;
    * phone, address — the most recently updated record that has one (people move and
      change numbers; the newest contact is the one to use).
    """
    tier_rank = {"city": 3, "county": 2, "township": 1}

    def ranked(pick) -> tuple[object, list[str]]:  # type: ignore[no-untyped-def]
        votes: Counter[object] = Counter()
        best: dict[object, tuple[int, int, dt.datetime]] = {}
        sites: dict[object, list[str]] = {}
        for f, updated, tier in records:
            value = pick(f)
            if value is None:
                continue
            votes[value] += 1
            key = (1 if f.national_id else 0, tier_rank.get(tier, 0), updated)
            best[value] = max(best.get(value, key), key)
            sites.setdefault(value, []).append(f.site)
        if not votes:
            return None, []
        value = max(votes, key=lambda v: (votes[v], best[v]))
        return value, sorted(set(sites[value]))

    def newest(pick) -> tuple[object, list[str]]:  # type: ignore[no-untyped-def]
        having = [(updated, f) for f, updated, _ in records if pick(f) is not None]
        if not having:
            return None, []
        _, f = max(having, key=lambda t: t[0])
        return pick(f), [f.site]

    out: dict[str, object] = {}
    for name, (value, sites) in {
        "national_id": ranked(lambda f: f.national_id),
        "name": ranked(lambda f: f.name),
        "sex": ranked(lambda f: f.sex),
        "birth_date": ranked(lambda f: f.birth_date),
        "phone": newest(lambda f: f.phone),
        "address": newest(lambda f: f.address),
    }.items():
        out[name] = {"value": value.isoformat() if isinstance(value, dt.date) else value,
                     "from": sites}
    return out
