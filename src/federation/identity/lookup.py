"""PIX and PDQ on the EMPI, shared by the FHIR REST routes (:mod:`federation.identity.http`)
and the gateway's gRPC methods (``ResolvePatient``, ``FindPatients``).

Everything here is synchronous (callers run it in a thread) except :func:`logged`, which
writes one exchange-log row per call — with patient hashes only, never a name or an ID.
Error messages never quote the identifier or demographics a caller sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass

from federation.errors import FederationError, InvalidInput, NotFound
from federation.fhir_systems import (
    EMPI_PERSON_SYSTEM,
    RESIDENT_ID_SYSTEM,
)
from federation.gateway.fanout import Requester
from federation.identity.index import RecordRef
from federation.identity.store import SYSTEMS_HINT as _SYSTEMS_HINT
from federation.identity.store import IdentityStore, site_of_system
from federation.store import ExchangeEntry, GatewayStore

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "PdqMatch",
    "PixResult",
    "SiteRecord",
    "find_patients",
    "logged",
    "person_ref",
    "resolve",
    "site_of_system",
    "split_token",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True, slots=True)
class SiteRecord:
    site_id: str
    record_id: str
    local_id: str | None


@dataclass(frozen=True, slots=True)
class PixResult:
    source: RecordRef
    person_id: str
    records: list[SiteRecord]


@dataclass(frozen=True, slots=True)
class PdqMatch:
    site_id: str
    record_id: str
    local_id: str | None
    person_id: str | None
    probability: float


def person_ref(person_id: str) -> str:
    """What the exchange log keeps of an EMPI person: a hash."""
    return hashlib.sha256(f"empi/Person/{person_id}".encode()).hexdigest()[:32]


def split_token(text: str, parameter: str) -> tuple[str, str]:
    """``<system>|<value>`` of a FHIR token parameter; both parts required."""
    system, sep, value = text.partition("|")
    if not sep or not system.strip() or not value.strip():
        raise InvalidInput(f"{parameter} must be <system>|<value> with both parts, where "
                           f"system is {_SYSTEMS_HINT}")
    return system.strip(), value.strip()


def _check_source_system(identity: IdentityStore, system: str) -> tuple[str, str] | None:
    if system == RESIDENT_ID_SYSTEM:
        return None
    site = site_of_system(system)
    if site is None:
        raise InvalidInput(f"unknown identifier system '{system}'; use {_SYSTEMS_HINT}")
    if site[0] not in identity.site_ids():
        raise InvalidInput(f"identifier system '{system}' names site '{site[0]}', which is "
                           "not a member of the consortium")
    return site


def resolve(identity: IdentityStore, system: str, value: str, *,
            sites: Collection[str] | None = None) -> PixResult:
    """PIX: the person the identifier's record belongs to and that person's other site
    records (all of them when the identifier is a resident ID, which is no site's own),
    only at ``sites`` when given."""
    site = _check_source_system(identity, system)
    if sites:
        unknown = sorted(set(sites) - identity.site_ids())
        if unknown:
            raise InvalidInput(f"target site(s) {', '.join(unknown)} are not members of "
                               "the consortium")
    ref = identity.find_record(system, value)
    person_id = identity.person_of(ref)
    if person_id is None:
        raise NotFound("the record that identifier names is not linked to any person (its "
                       "demographics are blank, or the site removed it)")
    records = [SiteRecord(str(r["site_id"]), str(r["record_id"]),
                          str(r["local_id"]) if r["local_id"] else None)
               for r in identity.cross_references(person_id)]
    if site is not None:
        records = [r for r in records if RecordRef(r.site_id, r.record_id) != ref]
    if sites:
        records = [r for r in records if r.site_id in set(sites)]
    return PixResult(ref, person_id, records)


def find_patients(identity: IdentityStore, query: Mapping[str, str], *,
                  identifier: tuple[str, str] | None = None,
                  limit: int = DEFAULT_LIMIT) -> list[PdqMatch]:
    """PDQ: site records matching ``query`` (EMPI input columns), best first.

    ``identifier`` (system, value): a resident ID joins the demographics; a site's patient
    number or Patient id, or an EMPI person id, names records exactly and stands alone.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"the result limit must be between 1 and {MAX_LIMIT}")
    query = {k: v for k, v in query.items() if v}
    if identifier is not None:
        system, value = identifier
        if system == RESIDENT_ID_SYSTEM:
            query["national_id"] = value
        else:
            if query:
                raise InvalidInput(f"an identifier of system '{system}' names records exactly; "
                                   "search by it alone, or by demographics without it")
            return _exact(identity, system, value, limit)
    return [PdqMatch(str(r["site_id"]), str(r["record_id"]),
                     str(r["local_id"]) if r["local_id"] else None,
                     str(r["person_id"]) if r["person_id"] else None, float(r["probability"]))
            for r in identity.search(query, limit=limit)]


def _exact(identity: IdentityStore, system: str, value: str, limit: int) -> list[PdqMatch]:
    if system == EMPI_PERSON_SYSTEM:
        rows = identity.cross_references(value)
        return [PdqMatch(str(r["site_id"]), str(r["record_id"]),
                         str(r["local_id"]) if r["local_id"] else None, value, 1.0)
                for r in rows[:limit]]
    if site_of_system(system) is None:
        raise InvalidInput(f"unknown identifier system '{system}'; use {_SYSTEMS_HINT} "
                           f"or {EMPI_PERSON_SYSTEM}")
    try:
        ref = identity.find_record(system, value)
    except NotFound:
        return []
    person_id = identity.person_of(ref)
    local = next((str(r["local_id"]) for r in identity.cross_references(person_id or "")
                  if (r["site_id"], r["record_id"]) == (ref.site_id, ref.record_id)
                  and r["local_id"]), None)
    return [PdqMatch(ref.site_id, ref.record_id, local, person_id, 1.0)]


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def birth_date(value: str) -> str:
    """An exact birth date (FHIR ``eq`` prefix allowed); ranges are not a patient search."""
    text = value[2:] if value.startswith("eq") else value
    if not _DATE.match(text):
        raise InvalidInput("birthdate must be an exact date YYYY-MM-DD (optionally eqYYYY-MM-DD)")
    return text


# ---------------------------------------------------------------------- exchange log


@dataclass(slots=True)
class LogNote:
    """What a call fills in for its exchange-log row."""

    patient_ref: str | None = None
    records: int = 0
    target_site: str | None = None
    #: what the row says of a call that went well (no patient data); errors give their own
    detail: str = ""


@contextlib.asynccontextmanager
async def logged(store: GatewayStore | None, requester: Requester, operation: str
                 ) -> AsyncIterator[LogNote]:
    """One exchange-log row for the call in the block, ok or error (then re-raised)."""
    note = LogNote()
    started = time.perf_counter()
    outcome, status, detail = "ok", "OK", ""
    try:
        yield note
    except FederationError as exc:
        outcome, status, detail = "error", exc.code, exc.message
        raise
    finally:
        if store is not None:
            await asyncio.to_thread(store.log_exchange, ExchangeEntry(
                at=dt.datetime.now(dt.UTC), correlation_id=uuid.uuid4().hex,
                requester_kind=requester.kind, requester_id=requester.id,
                requester_site=requester.site, target_site=note.target_site,
                operation=operation, purpose=requester.purpose, patient_ref=note.patient_ref,
                outcome=outcome, status_code=status, detail=detail or note.detail,
                records=note.records, duration_ms=(time.perf_counter() - started) * 1000))
