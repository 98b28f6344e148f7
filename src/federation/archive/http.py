"""The regional archive on the gateway's FHIR HTTP API (people, with bearer tokens).

==========================================================  ================================
``GET /fhir/Patient/{id}/$everything``                      the person's record, all sites
                                                            (``_count``, ``_offset``,
                                                            ``_type``) — searchset Bundle
``GET /fhir/{type}?patient=…``                              search (Observation, Condition,
                                                            MedicationRequest, Encounter,
                                                            DiagnosticReport,
                                                            DocumentReference,
                                                            AllergyIntolerance)
``GET /fhir/Patient/{id}/$summary``                         IPS-style document Bundle
``GET /api/archive/persons/{id}/summary``                   the same summary as JSON
``GET /api/archive/persons/{id}/record``                    summary, a timeline page and the
                                                            lab series from one read (the
                                                            console's record page)
``POST /fhir/Consent`` · ``GET /fhir/Consent/{id}``          the patient's Consent
``GET /fhir/Patient/$export`` (``Prefer: respond-async``)   research export kick-off
``GET|DELETE /fhir/$export-status/{job}``                   job status / cancel
``GET /fhir/$export-file/{job}/{type}/{part}``              NDJSON output
==========================================================  ================================

``{id}`` is an EMPI person id or any site's Patient id. Every route needs a bearer token
(:class:`~federation.gateway.auth_api.BearerAuth`) and checks its SMART scopes: a read
returns only the resource types the token's ``user/<type>.read`` scopes cover. The token's
purpose of use and reason are the read's (:mod:`federation.archive.access`). Errors are
OperationOutcomes (400 for unsupported parameters, naming them; 401; 403 with the reason).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from federation.archive.access import Reader
from federation.archive.bundle import searchset
from federation.archive.export import ExportRequest, ExportRunner, ExportStore
from federation.archive.record import PersonRecord, SourcedResource
from federation.archive.search import run_search
from federation.archive.search_params import (
    DEFAULT_COUNT,
    MAX_COUNT,
    SEARCH_PARAMETERS,
    SearchQuery,
    parse_search,
)
from federation.archive.service import ArchiveService
from federation.archive.summary import document, summary_json
from federation.errors import InvalidInput, NotFound, PermissionDenied
from federation.gateway.auth_api import BearerAuth
from federation.security.tokens import AccessTokens, StaffClaims
from federation.store import ExchangeEntry

__all__ = ["ARCHIVE_TYPES", "create_archive_router", "reader_of"]

FHIR_JSON = "application/fhir+json"
ARCHIVE_TYPES = ("Patient", "Encounter", "Condition", "Observation", "DiagnosticReport",
                 "ImagingStudy", "MedicationRequest", "AllergyIntolerance", "DocumentReference")
_EVERYTHING_PARAMS = {"_count", "_offset", "_type", "_format"}


def reader_of(claims: StaffClaims) -> Reader:
    """A signed-in person as the archive's reader."""
    return Reader(kind="user", id=claims.user_id, site_id=claims.site_id,
                  purpose=claims.purpose, roles=claims.roles, reason=claims.reason)


class FhirResponse(JSONResponse):
    """FHIR JSON, serialised with orjson (a whole record is megabytes of JSON)."""

    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _fhir(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
          ) -> JSONResponse:
    return FhirResponse(body, status_code=status, headers=headers)


@dataclass(frozen=True, slots=True)
class _Page:
    """A page of a person's record: ``_type``, ``_count``, ``_offset`` as ``$everything``
    takes them."""
    types: set[str] | None
    count: int
    offset: int
    keep: list[tuple[str, str]]

    @classmethod
    def of(cls, request: Request, operation: str, allowed: set[str]) -> _Page:
        params = dict(request.query_params)
        bad = sorted(set(request.query_params) - allowed)
        if bad:
            raise InvalidInput(f"unsupported {operation} parameters: {', '.join(bad)}; "
                               f"supported: {', '.join(sorted(allowed))}")
        count = _int(params, "_count", DEFAULT_COUNT * 2, MAX_COUNT * 10)
        offset = _int(params, "_offset", 0, 10_000_000)
        wanted = set(params["_type"].split(",")) if params.get("_type") else None
        if wanted and not wanted <= set(ARCHIVE_TYPES):
            raise InvalidInput(f"_type may name {', '.join(ARCHIVE_TYPES)}")
        keep = [("_count", str(count))] + ([("_type", params["_type"])] if wanted else [])
        return cls(wanted, count, offset, keep)

    def bundle(self, items: Sequence[SourcedResource], record: PersonRecord, base: str
               ) -> dict[str, Any]:
        return searchset(items, base=base, params=self.keep, count=self.count,
                         offset=self.offset, issues=record.issues, withheld=record.withheld)


def _search_bundle(query: SearchQuery, record: PersonRecord, base: str) -> dict[str, Any]:
    """The searchset of ``query`` over a gathered record (matches sorted as asked; the
    Bundle pages them)."""
    return searchset(run_search(query, record.resources), base=base,
                     params=query.canonical(), count=query.count, offset=query.offset,
                     issues=record.issues, withheld=record.withheld)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + request.url.path


def _readable(claims: StaffClaims, wanted: set[str] | None = None) -> set[str] | None:
    """The resource types the token may read (None: all), within ``wanted``."""
    types = {t for t in (wanted or ARCHIVE_TYPES) if claims.allows(t, "read")}
    if not types:
        raise PermissionDenied("the token's scopes allow reading none of the requested "
                               "resource types (e.g. user/Observation.read, user/*.read)")
    return None if wanted is None and len(types) == len(ARCHIVE_TYPES) else types


def _int(params: dict[str, str], name: str, default: int, maximum: int) -> int:
    value = params.get(name, str(default))
    if not value.isascii() or not value.isdigit() or int(value) > maximum:
        raise InvalidInput(f"{name} must be a whole number from 0 to {maximum}")
    return int(value)


def create_archive_router(service: ArchiveService, tokens: AccessTokens, *,
                          exports: ExportStore | None = None,
                          runner: ExportRunner | None = None) -> APIRouter:
    router = APIRouter(tags=["archive"])
    auth = BearerAuth(tokens)

    @router.get("/fhir/Patient/$export")
    async def export_kickoff(request: Request, claims: StaffClaims = Depends(auth)) -> Response:
        """Bulk Data kick-off (research, de-identified): regional-admin + HRESCH only."""
        if exports is None:
            raise InvalidInput("this gateway runs no research export")
        await _research(service, claims)
        if "respond-async" not in request.headers.get("prefer", ""):
            raise InvalidInput("a Bulk Data kick-off needs the header 'Prefer: respond-async'")
        sites = await asyncio.to_thread(service.people.site_ids)
        req = ExportRequest.parse(list(request.query_params.multi_items()), sites,
                                  str(request.url))
        job_id = await asyncio.to_thread(exports.create, req, requested_by=claims.user_id,
                                         site=claims.site_id, now=dt.datetime.now(dt.UTC))
        await asyncio.to_thread(_log, service, claims, "Archive/$export", f"kick-off job {job_id}")
        if runner is not None:
            runner.wake()
        status_url = str(request.base_url).rstrip("/") + f"/fhir/$export-status/{job_id}"
        return Response(status_code=202, headers={"Content-Location": status_url})

    @router.get("/fhir/$export-status/{job_id}")
    async def export_status(job_id: str, request: Request,
                            claims: StaffClaims = Depends(auth)) -> Response:
        assert exports is not None
        await _research(service, claims)
        job = await asyncio.to_thread(exports.get, job_id)
        if job.status in ("accepted", "running"):
            return Response(status_code=202, headers={"X-Progress": job.status,
                                                      "Retry-After": "1"})
        if job.status == "cancelled":
            raise NotFound(f"export job {job_id} was cancelled")
        if job.status == "failed":
            return _fhir({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "exception",
                "diagnostics": f"export job {job_id} failed: {job.error}"}]}, 500)
        base = str(request.base_url).rstrip("/")
        return JSONResponse({
            "transactionTime": job.updated_at.isoformat(), "request": job.request["url"],
            "requiresAccessToken": True,
            "output": [{"type": o["type"], "count": o["count"],
                        "url": f"{base}/fhir/$export-file/{job_id}/{o['type']}/{o['part']}"}
                       for o in job.output],
            "error": [{"type": "OperationOutcome", "issue": [
                {"severity": "warning", "code": "incomplete", "diagnostics": e}]}
                for e in _errors(job.error)]})

    @router.delete("/fhir/$export-status/{job_id}")
    async def export_cancel(job_id: str, claims: StaffClaims = Depends(auth)) -> Response:
        assert exports is not None
        await _research(service, claims)
        await asyncio.to_thread(exports.cancel, job_id, dt.datetime.now(dt.UTC))
        return Response(status_code=202)

    @router.get("/fhir/$export-file/{job_id}/{resource_type}/{part}")
    async def export_file(job_id: str, resource_type: str, part: int,
                          claims: StaffClaims = Depends(auth)) -> Response:
        assert exports is not None
        await _research(service, claims)
        body = await asyncio.to_thread(exports.file, job_id, resource_type, part)
        await asyncio.to_thread(_log, service, claims, "Archive/$export",
                                f"file {job_id}/{resource_type}/{part}")
        return Response(body, media_type="application/fhir+ndjson")

    @router.get("/fhir/Patient/{some_id}/$everything")
    async def everything(some_id: str, request: Request,
                         claims: StaffClaims = Depends(auth)) -> JSONResponse:
        """FHIR R4 Patient/$everything (§5.x operation-patient-everything) across sites."""
        await _scope(service, claims, "Patient", "read", "Archive/$everything")
        page = _Page.of(request, "$everything", _EVERYTHING_PARAMS)
        record = await service.read(reader_of(claims), some_id, operation="Archive/$everything",
                                    types=_readable(claims, page.types), lazy=True)
        await service.gatherer.fill(record.resources[page.offset:page.offset + page.count])
        return _fhir(page.bundle(record.resources, record, _base(request)))

    @router.get("/fhir/Patient/{some_id}/$summary")
    async def summary_document(some_id: str, claims: StaffClaims = Depends(auth)
                               ) -> JSONResponse:
        await _scope(service, claims, "Patient", "read", "Archive/$summary")
        record = await service.read(reader_of(claims), some_id, operation="Archive/$summary",
                                    types=_readable(claims))
        return _fhir(await asyncio.to_thread(document, record))

    @router.get("/api/archive/persons/{some_id}/summary")
    async def summary(some_id: str, claims: StaffClaims = Depends(auth)) -> dict[str, Any]:
        await _scope(service, claims, "Patient", "read", "Archive/summary")
        record = await service.read(reader_of(claims), some_id, operation="Archive/summary",
                                    types=_readable(claims))
        return summary_json(record)

    @router.get("/api/archive/persons/{some_id}/record")
    async def record_view(some_id: str, request: Request,
                          claims: StaffClaims = Depends(auth)) -> Response:
        """What a record page shows, from one read — one access decision, one exchange-log
        row: ``summary`` (as ``…/summary``), ``timeline`` (the ``$everything`` searchset of
        ``_type``, ``_count``, ``_offset``) and ``labs`` (the Observation searchset of
        category laboratory, oldest first, ``labs`` of them at most)."""
        await _scope(service, claims, "Patient", "read", "Archive/record")
        page = _Page.of(request, "record", _EVERYTHING_PARAMS | {"labs"})
        labs = _int(dict(request.query_params), "labs", DEFAULT_COUNT, MAX_COUNT)
        record = await service.read(reader_of(claims), some_id, operation="Archive/record",
                                    types=_readable(claims))
        shown = [r for r in record.resources if r.resource_type in page.types] \
            if page.types else record.resources
        root = str(request.base_url).rstrip("/")
        # the record holds only the types the token may read: no Observation scope, no labs
        labs_query = parse_search("Observation", [
            ("patient", some_id), ("category", "laboratory"), ("_sort", "date"),
            ("_count", str(labs))])
        return Response(orjson.dumps({
            "summary": summary_json(record),
            "timeline": page.bundle(shown, record, f"{root}/fhir/Patient/{some_id}/$everything"),
            "labs": _search_bundle(labs_query, record, f"{root}/fhir/Observation")}),
            media_type="application/json")

    @router.post("/fhir/Consent")
    async def post_consent(request: Request, claims: StaffClaims = Depends(auth)
                           ) -> JSONResponse:
        await _scope(service, claims, "Consent", "write", "Archive/Consent.create")
        consent_id, body = await service.record_consent(reader_of(claims), await request.body())
        return _fhir(body, 201, {"Location": f"{_base(request)}/{consent_id}"})

    @router.get("/fhir/Consent/{consent_id}")
    async def get_consent(consent_id: str, claims: StaffClaims = Depends(auth)) -> JSONResponse:
        await _scope(service, claims, "Consent", "read", "Archive/Consent.read")
        return _fhir(await asyncio.to_thread(service.people.get_consent, consent_id))

    for resource_type in SEARCH_PARAMETERS:
        _add_search(router, service, auth, resource_type)
    return router


def _add_search(router: APIRouter, service: ArchiveService, auth: BearerAuth,
                resource_type: str) -> None:
    async def search(request: Request, claims: StaffClaims = Depends(auth)) -> JSONResponse:
        await _scope(service, claims, resource_type, "read", f"Archive/search {resource_type}")
        try:
            query = parse_search(resource_type, list(request.query_params.multi_items()))
        except InvalidInput as exc:
            await service.rejected(reader_of(claims), f"Archive/search {resource_type}", exc)
            raise
        record = await service.read(reader_of(claims), query.patient,
                                    operation=f"Archive/search {resource_type}",
                                    types={resource_type})
        return _fhir(_search_bundle(query, record, _base(request)))

    search.__name__ = f"search_{resource_type.lower()}"
    router.add_api_route(f"/fhir/{resource_type}", search, methods=["GET"],
                         summary=f"Search {resource_type} in the regional archive")


async def _scope(service: ArchiveService, claims: StaffClaims, resource: str, action: str,
                 operation: str) -> None:
    """The token's SMART scopes must cover ``resource.action``; a refusal is logged."""
    if not claims.allows(resource, action):
        await asyncio.to_thread(_log, service, claims, operation,
                                f"refused: no scope user/{resource}.{action}", "refused")
        claims.require(resource, action)


async def _research(service: ArchiveService, claims: StaffClaims) -> None:
    """Research export is for a regional administrator with purpose HRESCH; a refusal
    is logged like every other."""
    if "regional-admin" not in claims.roles or claims.purpose != "HRESCH":
        await asyncio.to_thread(_log, service, claims, "Archive/$export", "refused: not "
                                "regional-admin with purpose HRESCH", "refused")
        raise PermissionDenied("the research export is for a regional administrator "
                               "(role regional-admin) with purpose of use HRESCH")


def _errors(text: str) -> list[str]:
    import json

    try:
        found = json.loads(text) if text else []
    except ValueError:
        return [text]
    return [str(e) for e in found] if isinstance(found, list) else [str(found)]


def _log(service: ArchiveService, claims: StaffClaims, operation: str, detail: str,
         outcome: str = "ok") -> None:
    service.store.log_exchange(ExchangeEntry(
        at=dt.datetime.now(dt.UTC), correlation_id=uuid.uuid4().hex, requester_kind="user",
        requester_id=claims.user_id, requester_site=claims.site_id, target_site=None,
        operation=operation, purpose=claims.purpose, patient_ref=None,
        outcome=outcome, status_code="OK" if outcome == "ok" else "PERMISSION_DENIED",
        detail=detail))
