"""Audit search: who exchanged what about whom, why, and how it went — over the exchange
log, each row with its AuditEvent's leaf index when the trail holds one.

Every search is bounded by a time window (at most :data:`MAX_DAYS`), so it reads through
an index whatever else it filters on: ``at`` alone, ``(patient_ref, at)`` for a patient,
``(requester_id, at)`` for a requester (migration 0009), the site indexes for a site.

A patient is named by their EMPI person id and found under every hash the log may have
recorded for them (:func:`patient_refs`): the exchange log never holds an identifier in
clear, only :func:`federation.archive.read.patient_ref` of a site record (reads of a
site's record, PIX, referrals and consults) or of the person (EMPI reads, the regional
archive) — so the search hashes the person's ids and records the same ways.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, or_, select

from federation.archive.read import patient_ref
from federation.archive.service import person_ref as archive_person_ref
from federation.errors import InvalidInput
from federation.identity.lookup import person_ref as empi_person_ref
from federation.identity.store import IdentityStore
from federation.store.gateway_store import StoreSessions
from federation.store.models import AuditLeaf, ExchangeEntry, ExchangeLog

__all__ = ["MAX_DAYS", "EventQuery", "EventRow", "ExchangeSearch", "patient_refs"]

MAX_DAYS = 366


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Exchanges in [since, until) matching every given filter."""

    since: dt.datetime
    until: dt.datetime
    requester_kind: str | None = None
    requester_id: str | None = None
    #: the requesting or the target site
    site: str | None = None
    #: any of these hashes; None: any patient (or none)
    patient_refs: frozenset[str] | None = None
    purpose: str | None = None
    #: an exact operation, or a prefix ending in ``*`` (``Referral*``)
    operation: str | None = None
    outcome: str | None = None

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise InvalidInput("since and until need a time zone")
        if self.since >= self.until:
            raise InvalidInput(f"since ({self.since.isoformat()}) must be before until "
                               f"({self.until.isoformat()})")
        if self.until - self.since > dt.timedelta(days=MAX_DAYS):
            raise InvalidInput(f"an audit search covers at most {MAX_DAYS} days; ask for a "
                               "shorter window")


@dataclass(frozen=True, slots=True)
class EventRow:
    entry: ExchangeEntry
    #: the AuditEvent's index in the Merkle log; None for exchanges before the trail began
    leaf: int | None


def patient_refs(identity: IdentityStore, person_id: str) -> frozenset[str]:
    """Every hash under which the exchange log may have recorded an exchange about the
    person: their person ids (with those merged into them) as the EMPI, the archive and
    an unresolved archive lookup hash them, and each site record ever linked to them.
    NotFound for an unknown person."""
    persons, records = identity.ever_linked(person_id)
    refs = {patient_ref(r.site_id, r.record_id) for r in records}
    for p in persons:
        refs |= {empi_person_ref(p), archive_person_ref(p), patient_ref("lookup", p)}
    return frozenset(refs)


_X = ExchangeLog.__table__.c


def _conditions(q: EventQuery) -> list[object]:
    out: list[object] = [_X.at >= q.since, _X.at < q.until]
    if q.requester_kind is not None:
        out.append(_X.requester_kind == q.requester_kind)
    if q.requester_id is not None:
        out.append(_X.requester_id == q.requester_id)
    if q.site is not None:
        out.append(or_(_X.requester_site == q.site, _X.target_site == q.site))
    if q.patient_refs is not None:
        out.append(_X.patient_ref.in_(sorted(q.patient_refs)) if q.patient_refs
                   else _X.id.is_(None))           # a person the log cannot have seen
    if q.purpose is not None:
        out.append(_X.purpose == q.purpose)
    if q.operation is not None:
        out.append(_X.operation.startswith(q.operation[:-1], autoescape=True)
                   if q.operation.endswith("*") else _X.operation == q.operation)
    if q.outcome is not None:
        out.append(_X.outcome == q.outcome)
    return out


class ExchangeSearch(StoreSessions):
    """Pages of the exchange log for the audit search (read-only)."""

    def search(self, q: EventQuery, *, offset: int = 0, limit: int = 50
               ) -> tuple[list[EventRow], int]:
        """A page of matching exchanges, newest first, and how many match in all."""
        where = _conditions(q)
        leaf = AuditLeaf.__table__.c
        page = (select(ExchangeLog.__table__, leaf.idx.label("leaf_idx"))
                .outerjoin(AuditLeaf.__table__, leaf.exchange_id == _X.id)
                .where(*where).order_by(_X.at.desc(), _X.id.desc())
                .offset(offset).limit(limit))
        with self._read() as s:
            total = s.execute(select(func.count()).select_from(ExchangeLog.__table__)
                              .where(*where)).scalar_one()
            rows = s.execute(page).all()
        return [EventRow(_entry(r._mapping), None if r.leaf_idx is None else int(r.leaf_idx))
                for r in rows], int(total)


def _entry(m: object) -> ExchangeEntry:
    return ExchangeEntry(**{name: m[name] for name in _FIELDS})  # type: ignore[index]


_FIELDS = ("at", "correlation_id", "requester_kind", "requester_id", "requester_site",
           "target_site", "operation", "purpose", "patient_ref", "outcome", "status_code",
           "detail", "records", "duration_ms", "id")
