"""Consults on the gateway's HTTP API, for staff signed in with a bearer token.

* ``GET /api/consults?status=&mine=&_count=&_offset=`` → ``Bundle`` ``searchset`` of the
  caller's consult Tasks: a specialist's pools (``mine=true``: those they hold), a
  requester's site, every consult for a regional administrator;
* ``POST /api/consults`` (JSON: patient_id, kind, question, mode, urgency, pool, reason,
  study_ids, consent, request_id) → the Task, 201 (200 for a repeated request_id);
* ``GET /api/consults/{id}`` → ``Bundle`` ``collection``: Task, ServiceRequest, Consent,
  Appointment, every report version with its Provenance;
* ``GET /api/consults/{id}/studies`` → the study manifests (JSON: objects, sizes, SHA-256
  of each object and chunk) — they are not FHIR resources;
* ``POST /api/consults/{id}/{action}`` — claim, decline, hand-over (``to_user``),
  schedule (``slot_start``, ``participants``), start, end, ack, cancel (JSON: ``note`` …);
  ``report`` and ``amend`` take ``report`` (the DiagnosticReport as signed),
  ``signature`` (base64) and ``certificate`` (PEM) — signing happens on the specialist's
  side, never here;
* ``GET /api/consults/{id}/studies/{study}/{object}`` streams one object, chunk by chunk
  (``Range: bytes=<offset>-`` resumes from a chunk boundary; ``Digest`` /
  ``X-Object-SHA256`` carry the recorded SHA-256);
* ``GET /api/consults/{id}/studies/{study}/{object}/view`` — the object as a browser can
  show it (:mod:`.render`): a DICOM image as PNG (``frame``, ``wc``, ``ww``), an ECG CSV
  as JSON ``{rate_hz, unit, seconds, samples, leads}`` (``seconds``), a PNG/JPEG as it is;
  fetched whole from the origin like the stream (same checks, one exchange-log row
  ``Consults/ViewStudy``), its whole SHA-256 checked before anything is rendered; 413
  over ``consult_view_max_bytes``, 415 for a type that cannot be viewed;
* ``POST /api/consults/{id}/report-draft`` (JSON: ``conclusion``, ``codes`` [{system,
  code, display}], ``amend``) → ``{report, to_sign, version, sig_format}``: the next
  report version as ``report``/``amend`` will take it, and base64 of the exact bytes to
  sign (:func:`~.report.canonical`) — the console signs them in the browser
  (``console/static/js/sign.js``) and posts report, signature and certificate back;
* ``GET /fhir/PractitionerRole`` — the specialist pools with their availability;
* ``GET /api/consults/turnaround`` — per hub site and pool: time to claim, report, close.

Errors are FHIR OperationOutcomes (the gateway's one table). Moves and fetches are logged
by the service; reads here log one exchange each.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from federation.consult import fhir
from federation.consult.moves import Details
from federation.consult.render import VIEWABLE, ViewOptions, render
from federation.consult.report import SIG_FORMAT, canonical
from federation.consult.service import ConsultService, NewConsult
from federation.errors import IntegrityError, InvalidInput
from federation.gateway.auth_api import requester_of
from federation.gateway.params import int_param
from federation.identity.lookup import logged
from federation.referral.http import principal_of_request
from federation.store import GatewayStore

__all__ = ["create_consult_router"]

FHIR_JSON = "application/fhir+json"
MAX_COUNT = 200
#: the largest object rendered for a browser unless the gateway's settings say otherwise
VIEW_MAX_BYTES = 64 * 1024 * 1024
VIEW_PARAMS = ("frame", "wc", "ww", "seconds")


def _fhir(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json() if await request.body() else {}
    except ValueError:
        raise InvalidInput("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


def _str(body: dict[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidInput(f"'{key}' must be a string")
    return value


def _when(text: str, key: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"'{key}' must be an ISO 8601 date-time with a time zone") from None
    if value.tzinfo is None:
        raise InvalidInput(f"'{key}' needs a time zone (e.g. 2026-12-01T09:30+08:00)")
    return value


def _new_consult(body: dict[str, Any]) -> NewConsult:
    studies = body.get("study_ids") or []
    reason = body.get("reason") or {}
    if not isinstance(studies, list) or not all(isinstance(s, str) for s in studies):
        raise InvalidInput("'study_ids' must be a list of study ids")
    if not isinstance(reason, dict):
        raise InvalidInput("'reason' must be an object (system, code, display, text)")
    return NewConsult(patient_id=_str(body, "patient_id"), kind=_str(body, "kind"),
                      question=_str(body, "question"), mode=_str(body, "mode", "offline"),
                      urgency=_str(body, "urgency", "routine"), pool=_str(body, "pool") or None,
                      reason={str(k): str(v) for k, v in reason.items()},
                      study_ids=tuple(studies), consent_method=_str(body, "consent") or None,
                      request_id=_str(body, "request_id") or None)


def _number(raw: str | None, name: str, *, whole: bool = False) -> float | None:
    if raw is None:
        return None
    try:
        value = float(int(raw) if whole else float(raw))
    except ValueError:
        raise InvalidInput(f"'{name}' must be a {'whole ' if whole else ''}number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidInput(f"'{name}' must be a finite number")
    return value


def _view_options(request: Request) -> ViewOptions:
    q = request.query_params
    unknown = set(q) - set(VIEW_PARAMS)
    if unknown:
        raise InvalidInput(f"parameter '{sorted(unknown)[0]}' is not supported here; "
                           f"supported: {', '.join(VIEW_PARAMS)}")
    frame = _number(q.get("frame"), "frame", whole=True)
    if frame is not None and frame < 1:
        raise InvalidInput("'frame' counts from 1, as DICOM numbers frames")
    seconds = _number(q.get("seconds"), "seconds")
    if seconds is not None and not 0 < seconds <= 3600:
        raise InvalidInput("'seconds' must be more than 0 and at most 3600")
    return ViewOptions(frame=None if frame is None else int(frame), wc=_number(q.get("wc"), "wc"),
                       ww=_number(q.get("ww"), "ww"), seconds=seconds)


def _codes(body: dict[str, Any]) -> list[dict[str, str]]:
    codes = body.get("codes") or []
    if not isinstance(codes, list) or not all(
            isinstance(c, dict) and all(isinstance(v, str) for v in c.values()) for c in codes):
        raise InvalidInput("'codes' must be a list of {system, code, display} objects of "
                           "strings")
    return codes


def create_consult_router(service: ConsultService, *, store: GatewayStore | None = None,
                          view_max_bytes: int = VIEW_MAX_BYTES) -> APIRouter:
    router = APIRouter()

    @router.get("/api/consults")
    async def inbox(request: Request) -> JSONResponse:
        who = principal_of_request(request)
        async with logged(store, requester_of(request), "Consults/Inbox") as note:
            q = request.query_params
            unknown = set(q) - {"status", "mine", "_count", "_offset"}
            if unknown:
                raise InvalidInput(f"parameter '{sorted(unknown)[0]}' is not supported here; "
                                   "supported: status, mine, _count, _offset")
            count = int_param(q.get("_count"), "_count", 20, 1, MAX_COUNT)
            offset = int_param(q.get("_offset"), "_offset", 0, 0, 10**9)
            statuses = tuple(s for s in (q.get("status") or "").split(",") if s)
            rows, total = await service.inbox(who, statuses=statuses,
                                              mine=q.get("mine") == "true", offset=offset,
                                              limit=count)
            note.records = len(rows)
            return _fhir({"resourceType": "Bundle", "type": "searchset", "total": total,
                          "entry": [{"resource": fhir.task_resource(r),
                                     "search": {"mode": "match"}} for r in rows]})

    @router.post("/api/consults")
    async def request_consult(request: Request) -> JSONResponse:
        who = principal_of_request(request)
        row, created = await service.request(who, _new_consult(await _json(request)))
        return _fhir(fhir.task_resource(row), 201 if created else 200)

    @router.get("/api/consults/alerts")
    async def alerts(request: Request) -> dict[str, Any]:
        found = await service.alerts(principal_of_request(request))
        return {"alerts": [{"consult": n.task_id, "at": n.at.isoformat(),
                            "audience": n.audience, "reason": n.reason} for n in found]}

    @router.get("/api/consults/turnaround")
    async def turnaround_report() -> dict[str, Any]:
        return {"lines": [asdict(t) for t in await service.turnaround()]}

    @router.get("/api/consults/{consult_id}")
    async def read(consult_id: str, request: Request) -> JSONResponse:
        who = principal_of_request(request)
        async with logged(store, requester_of(request), "Consults/Get") as note:
            view = await service.view(who, consult_id)
            note.records = 1
            kept = [body for name, body in sorted(view.resources.items())
                    if not name.startswith("Study:")]
            return _fhir(fhir.bundle(f"{consult_id}-view",
                                     [fhir.task_resource(view.task), *kept],
                                     view.task.updated_at))

    @router.get("/api/consults/{consult_id}/studies")
    async def studies(consult_id: str, request: Request) -> dict[str, Any]:
        who = principal_of_request(request)
        async with logged(store, requester_of(request), "Consults/Studies") as note:
            view = await service.view(who, consult_id)
            note.records = len(view.studies)
            return {"studies": [m.to_json() for m in view.studies]}

    # before /{action}: the first route that matches a path serves it
    @router.post("/api/consults/{consult_id}/report-draft")
    async def report_draft(consult_id: str, request: Request) -> dict[str, Any]:
        who = principal_of_request(request)
        body = await _json(request)
        amend = body.get("amend", False)
        if not isinstance(amend, bool):
            raise InvalidInput("'amend' must be true or false")
        report = await service.draft_report(who, consult_id, _str(body, "conclusion"),
                                            _codes(body), amend=amend)
        return {"report": report, "version": int(report["id"].rsplit("-r", 1)[1]),
                "to_sign": base64.b64encode(canonical(report)).decode(),
                "sig_format": SIG_FORMAT}

    @router.post("/api/consults/{consult_id}/{action}")
    async def act(consult_id: str, action: str, request: Request) -> JSONResponse:
        who = principal_of_request(request)
        body = await _json(request)
        if action in ("report", "amend"):
            report = body.get("report")
            if not isinstance(report, dict):
                raise InvalidInput("'report' must be the signed FHIR DiagnosticReport")
            try:
                signature = base64.b64decode(_str(body, "signature"), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput("'signature' must be base64") from None
            cert = _str(body, "certificate").encode()
            if not signature or not cert:
                raise InvalidInput("a report needs its 'signature' and the signer's "
                                   "'certificate' (PEM)")
            try:
                row = await service.report(who, consult_id, report, signature, cert,
                                           amend=action == "amend")
            except IntegrityError as exc:
                # a signature or certificate the caller sent fails its check: their
                # input, refused (400) — not the gateway's own data gone bad (500)
                raise InvalidInput(f"the report was refused: {exc.message}",
                                   code=exc.code) from None
            return _fhir(fhir.task_resource(row))
        participants = body.get("participants") or []
        if not isinstance(participants, list):
            raise InvalidInput("'participants' must be a list of user ids")
        d = Details(note=_str(body, "note"), to_user=_str(body, "to_user"),
                    slot_start=_when(_str(body, "slot_start"), "slot_start"),
                    participants=tuple(str(p) for p in participants))
        version = body.get("expected_version")
        row = await service.act(who, consult_id, action, d,
                                expected_version=version if isinstance(version, int) else None)
        return _fhir(fhir.task_resource(row))

    @router.get("/api/consults/{consult_id}/studies/{study_id}/{name}")
    async def stream(consult_id: str, study_id: str, name: str,
                     request: Request) -> StreamingResponse:
        who = principal_of_request(request)
        offset = 0
        ranged = request.headers.get("range")
        if ranged:
            unit, _, spec = ranged.partition("=")
            start, dash, end = spec.partition("-")
            if unit.strip() != "bytes" or not dash or end or not start.isdigit():
                raise InvalidInput("Range must be bytes=<offset>- (an open range from a "
                                   "chunk boundary)")
            offset = int(start)
        view = await service.view(who, consult_id)
        obj = next((m for m in view.studies if m.study_id == study_id), None)
        if obj is None:
            raise InvalidInput(f"consult {consult_id} names no study '{study_id}'")
        item = obj.object(name)
        chunks = service.fetch_study(who, consult_id, study_id, name, offset)
        first = await anext(chunks, None)   # errors (permission, node away) before headers

        async def body():
            if first is not None:
                yield bytes(first.data)
            async for chunk in chunks:
                yield bytes(chunk.data)

        headers = {"X-Object-SHA256": item.sha256, "Accept-Ranges": "bytes",
                   "Digest": "sha-256=" + base64.b64encode(bytes.fromhex(item.sha256)).decode(),
                   "Content-Length": str(item.size - offset)}
        if offset:
            headers["Content-Range"] = f"bytes {offset}-{item.size - 1}/{item.size}"
        return StreamingResponse(body(), status_code=206 if offset else 200,
                                 media_type=item.content_type, headers=headers)

    @router.get("/api/consults/{consult_id}/studies/{study_id}/{name}/view")
    async def view(consult_id: str, study_id: str, name: str, request: Request) -> Response:
        who = principal_of_request(request)
        options = _view_options(request)
        obj, data = await service.read_whole(who, consult_id, study_id, name,
                                             max_bytes=view_max_bytes, types=tuple(VIEWABLE))
        shown = await asyncio.to_thread(render, obj.content_type, data, options, name)
        return Response(shown.body, media_type=shown.content_type, headers={
            "X-Object-SHA256": obj.sha256, "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff"})

    @router.get("/fhir/PractitionerRole")
    async def pools(request: Request) -> JSONResponse:
        kind = request.query_params.get("specialty")
        found = [p for p in service.rules.pools if kind in (None, p.kind)]
        return _fhir({"resourceType": "Bundle", "type": "searchset", "total": len(found),
                      "entry": [{"resource": fhir.practitioner_role(p),
                                 "search": {"mode": "match"}} for p in found]})

    return router
