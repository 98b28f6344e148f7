"""Reading one site patient's record from the archive, logged like every exchange."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
import uuid

from federation.archive.store import ArchiveStore, StoredResource
from federation.errors import InvalidInput, NotFound
from federation.gateway.fanout import Requester
from federation.gateway.search import PURPOSES
from federation.store import ExchangeEntry, GatewayStore

__all__ = ["OPERATION", "patient_ref", "read_patient_record"]

OPERATION = "Gateway/ReadPatientRecord"


def patient_ref(site_id: str, patient_id: str) -> str:
    """What the exchange log keeps of a patient: a hash, never the id in clear."""
    return hashlib.sha256(f"{site_id}/Patient/{patient_id}".encode()).hexdigest()[:32]


async def read_patient_record(store: GatewayStore, archive: ArchiveStore, requester: Requester,
                              site_id: str, patient_id: str, purpose: str
                              ) -> list[StoredResource]:
    """The patient's live resources at ``site_id``, Patient first; NotFound when the
    archive holds no such Patient. One exchange-log row either way."""
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose_of_use must be one of {', '.join(sorted(PURPOSES))}, "
                           f"got {purpose!r}")
    if not site_id or not patient_id:
        raise InvalidInput("reading a record needs both site_id and patient_id")
    await asyncio.to_thread(store.require_site, site_id)
    started = time.perf_counter()
    found = await asyncio.to_thread(archive.resources_of, site_id, patient_id)
    found.sort(key=lambda r: (r.resource_type != "Patient", r.seq))
    has_patient = bool(found) and found[0].resource_type == "Patient"
    await asyncio.to_thread(store.log_exchange, ExchangeEntry(
        at=dt.datetime.now(dt.UTC), correlation_id=uuid.uuid4().hex,
        requester_kind=requester.kind, requester_id=requester.id,
        requester_site=requester.site, target_site=site_id, operation=OPERATION,
        purpose=purpose, patient_ref=patient_ref(site_id, patient_id),
        outcome="ok" if has_patient else "error",
        status_code="OK" if has_patient else "NOT_FOUND",
        records=len(found) if has_patient else 0,
        duration_ms=(time.perf_counter() - started) * 1000))
    if not has_patient:
        raise NotFound(f"the archive holds no Patient/{patient_id} from site {site_id} "
                       "(not yet synced, or not a patient of that site)")
    return found
