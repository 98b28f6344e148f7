"""The archive's person-level reads, for both edges (HTTP for people, gRPC for nodes).

Every read goes: resolve the person (EMPI) → care relationships and the patient's
Consents → :func:`federation.archive.access.decide` → gather the allowed part of the
record (:class:`~federation.archive.record.RecordGatherer`) → one exchange-log row with
the reader, purpose, outcome (``ok`` / ``refused`` / ``error``) and the person as a hash,
whether the read was allowed or not. A break-glass read is logged with its reason
(the exchange log is what regional administrators review; the reason is the reader's
justification, which the review needs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from dataclasses import dataclass

from federation.archive.access import Decision, Reader, decide
from federation.archive.care import CareRegistry
from federation.archive.consent import parse_consent
from federation.archive.people import Person, PersonDirectory
from federation.archive.read import patient_ref
from federation.archive.record import PersonRecord, RecordGatherer
from federation.errors import FederationError, PermissionDenied
from federation.store import ExchangeEntry, GatewayStore

__all__ = ["ArchiveService", "CONSENT_ROLES", "person_ref"]

#: who may record a patient's Consent (staff of a site that holds the patient's record)
CONSENT_ROLES = frozenset({"doctor", "nurse", "site-admin"})


def person_ref(person_id: str) -> str:
    """The exchange log's hash of an EMPI person (never the id in clear)."""
    return patient_ref("empi", person_id)


@dataclass(slots=True)
class _Log:
    outcome: str = "ok"
    status: str = "OK"
    detail: str = ""
    records: int = 0
    patient: str | None = None


class ArchiveService:
    def __init__(self, store: GatewayStore, people: PersonDirectory, care: CareRegistry,
                 gatherer: RecordGatherer, *, care_window_days: int) -> None:
        self.store, self.people, self.care, self.gatherer = store, people, care, gatherer
        self._window = care_window_days

    async def read(self, reader: Reader, some_id: str, *, operation: str,
                   types: set[str] | None = None, lazy: bool = False) -> PersonRecord:
        """The part of the person's record ``reader`` may see (PermissionDenied when
        none), logged either way."""
        started, note = time.perf_counter(), _Log(patient=patient_ref("lookup", some_id))
        correlation = uuid.uuid4().hex
        try:
            person = await asyncio.to_thread(self.people.resolve, some_id)
            note.patient = person_ref(person.person_id)
            decision = await self.decide(reader, person)
            if not decision.allowed:
                note.outcome, note.status, note.detail = "refused", "PERMISSION_DENIED", \
                    decision.reason
                raise PermissionDenied(decision.reason)
            record = await self.gatherer.gather(
                person, permits=decision.permits, requester=reader.requester(),
                purpose=reader.purpose or "", correlation_id=correlation, types=types,
                lazy=lazy)
            note.records = len(record.resources)
            note.detail = _detail(reader, decision, record)
            return record
        except FederationError as exc:
            if note.outcome == "ok":
                note.outcome, note.status, note.detail = "error", exc.code, exc.message
            raise
        finally:
            await asyncio.to_thread(self._log, reader, operation, correlation, note, started)

    async def rejected(self, reader: Reader, operation: str, exc: FederationError) -> None:
        """Log a read refused before it reached the archive (a malformed query, no
        practitioner): every attempt is in the exchange log."""
        note = _Log(outcome="error", status=exc.code, detail=exc.message)
        await asyncio.to_thread(self._log, reader, operation, uuid.uuid4().hex, note,
                                time.perf_counter())

    async def decide(self, reader: Reader, person: Person) -> Decision:
        return await asyncio.to_thread(self._decide, reader, person)

    def _decide(self, reader: Reader, person: Person) -> Decision:
        # only the reader's own site's relationship counts (access rule 3)
        caring = {reader.site_id} if self.care.cares(person.person_id, reader.site_id) \
            else set()
        rules = self.people.consent_rules(person)
        return decide(reader, person.sites, caring, rules, window_days=self._window)

    async def record_consent(self, reader: Reader, raw: bytes) -> tuple[str, dict]:
        """Store a patient's Consent posted by staff of a site holding their record."""
        started, note = time.perf_counter(), _Log()
        try:
            if reader.kind == "user" and not reader.roles & CONSENT_ROLES:
                note.outcome, note.status = "refused", "PERMISSION_DENIED"
                raise PermissionDenied("recording a patient's Consent needs one of the roles "
                                       f"{', '.join(sorted(CONSENT_ROLES))}")
            sites = await asyncio.to_thread(self.people.site_ids)
            parsed = parse_consent(raw, sites)
            person = await asyncio.to_thread(
                self.people.resolve, parsed.patient_record or parsed.person_id or "")
            note.patient = person_ref(person.person_id)
            if reader.site_id not in person.sites:
                note.outcome, note.status = "refused", "PERMISSION_DENIED"
                raise PermissionDenied(f"site {reader.site_id} holds no record of this person; "
                                       "a Consent is recorded where the patient is cared for")
            consent_id = await asyncio.to_thread(
                self.people.record_consent, person, parsed, recorded_by=reader.id,
                now=dt.datetime.now(dt.UTC))
            note.records, note.detail = 1, f"Consent/{consent_id} ({parsed.status})"
            return consent_id, await asyncio.to_thread(self.people.get_consent, consent_id)
        except FederationError as exc:
            if note.outcome == "ok":
                note.outcome, note.status, note.detail = "error", exc.code, exc.message
            raise
        finally:
            await asyncio.to_thread(self._log, reader, "Archive/Consent.create",
                                    uuid.uuid4().hex, note, started)

    def _log(self, reader: Reader, operation: str, correlation: str, note: _Log,
             started: float) -> None:
        self.store.log_exchange(ExchangeEntry(
            at=dt.datetime.now(dt.UTC), correlation_id=correlation,
            requester_kind=reader.kind if reader.kind in ("user", "node") else "user",
            requester_id=reader.id, requester_site=reader.site_id, target_site=None,
            operation=operation, purpose=reader.purpose, patient_ref=note.patient,
            outcome=note.outcome, status_code=note.status, detail=note.detail[:500],
            records=note.records, duration_ms=(time.perf_counter() - started) * 1000))


def _detail(reader: Reader, decision: Decision, record: PersonRecord) -> str:
    parts = [decision.basis]
    if decision.basis == "break-glass":
        parts.append(f"reason: {(reader.reason or '').strip()[:200]}")
    if record.withheld:
        parts.append(f"{record.withheld} withheld by consent")
    missing = sorted({i.site_id for i in record.issues if i.site_id})
    if missing:
        parts.append(f"missing sites: {', '.join(missing)}")
    return "; ".join(parts)
