"""Referrals on the gateway's HTTP API, for people signed in with a bearer token: FHIR
search and read here, and the console's JSON API — create, every move, one referral's
view, its packet — in :mod:`.http_api` (included by :func:`create_referral_router`).
Nodes and the CLI reach the same :class:`ReferralService` over gRPC.

* ``GET /fhir/Task?status=&business-status=&owner=&requester=&patient=&priority=&_id=
  &_tag=&_count=&_offset=&_sort=`` → ``Bundle`` ``searchset`` (FHIR R4 §3.1.1 search):
  a comma in a value means OR, parameters combine with AND; ``owner`` / ``requester``
  take ``Organization/<site>`` or ``<site>``; ``patient`` takes the EMPI person id or
  ``Patient/<id at the requesting site>``, and ``patient:identifier`` takes
  ``urn:federation:empi:person|<id>``; ``_tag=urn:federation:referral:flag|escalated``.
  Paging: ``_count`` (1–200, default 20) and ``_offset``, with ``self`` / ``next`` /
  ``previous`` links and ``total``. ``_sort``: ``-_lastUpdated`` (default),
  ``_lastUpdated``, ``authored-on``, ``-authored-on``.
* ``GET /fhir/ServiceRequest?status=active|completed|revoked&patient=&performer=
  &priority=&based-on=&_id=&_count=&_offset=&_sort=`` likewise.
* ``GET /fhir/Task/{id}``, ``GET /fhir/ServiceRequest/{id}``.
* ``GET /api/referrals/turnaround`` and ``GET /api/referrals/alerts`` (JSON).
* ``GET /api/referrals/options``, ``POST /api/referrals``,
  ``POST /api/referrals/packet-preview``, ``GET /api/referrals/{id}``,
  ``GET /api/referrals/{id}/packet``, ``POST /api/referrals/{id}/{action}`` — see
  :mod:`.http_api`.

An unsupported parameter is a 400 OperationOutcome: silently ignoring a filter would
return the wrong referrals. Every call is one exchange-log row.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from federation.errors import InvalidInput
from federation.fhir_systems import EMPI_PERSON_SYSTEM
from federation.gateway.auth_api import principal_of_request, requester_of
from federation.gateway.params import int_param
from federation.identity.lookup import logged
from federation.referral import fhir
from federation.referral.http_api import create_referral_api_router
from federation.referral.service import ReferralService
from federation.store import GatewayStore
from federation.workflow.records import TaskFilter, TaskRow
from federation.workflow.state import TaskStatus

__all__ = ["create_referral_router", "principal_of_request", "TASK_PARAMETERS",
           "SERVICE_REQUEST_PARAMETERS"]

FHIR_JSON = "application/fhir+json"
_PAGING = ("_count", "_offset", "_sort", "_format")
TASK_PARAMETERS = ("_id", "status", "business-status", "owner", "requester", "patient",
                   "patient:identifier", "priority", "_tag", *_PAGING)
SERVICE_REQUEST_PARAMETERS = ("_id", "status", "patient", "patient:identifier", "performer",
                              "priority", "based-on", *_PAGING)
_SORTS = {"-_lastUpdated": "-updated", "_lastUpdated": "updated",
          "authored-on": "created", "-authored-on": "-created"}
_URGENCY_OF_PRIORITY = {v: k for k, v in fhir.PRIORITY.items()}
_SR_STATUS = {"active": ("requested", "accepted", "in-progress"), "completed": ("completed",),
              "revoked": ("rejected", "cancelled")}
MAX_COUNT = 200


def _fhir(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def _params(request: Request, supported: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        if name not in supported:
            raise InvalidInput(f"parameter '{name}' is not supported here; supported: "
                               f"{', '.join(supported)}")
        if name in out:
            raise InvalidInput(f"give parameter '{name}' once (a comma means OR)")
        out[name] = [v.strip() for v in value.split(",") if v.strip()]
        if not out[name]:
            raise InvalidInput(f"parameter '{name}' is empty")
    fmt = out.get("_format", [None])[0]
    if fmt is not None and fmt not in ("json", "application/json", FHIR_JSON):
        raise InvalidInput("only JSON is served: _format must be json or application/fhir+json")
    return out


def _sites(values: list[str], name: str) -> tuple[str, ...]:
    out = []
    for v in values:
        kind, _, ident = v.rpartition("/")
        if kind not in ("", "Organization") or not ident:
            raise InvalidInput(f"{name} must be Organization/<site id> or <site id>, got {v!r}")
        out.append(ident)
    return tuple(out)


def _patients(params: dict[str, list[str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(EMPI person ids, origin patient ids) a search names."""
    persons, records = [], []
    for v in params.get("patient", []):
        kind, _, ident = v.rpartition("/")
        if kind == "Patient":
            records.append(ident)
        elif kind == "":
            persons.append(ident)
        else:
            raise InvalidInput(f"patient must be an EMPI person id or Patient/<id>, got {v!r}")
    for v in params.get("patient:identifier", []):
        system, sep, value = v.partition("|")
        if not sep or system != EMPI_PERSON_SYSTEM or not value:
            raise InvalidInput(f"patient:identifier must be {EMPI_PERSON_SYSTEM}|<person id>")
        persons.append(value)
    return tuple(persons), tuple(records)


def _paging(params: dict[str, list[str]]) -> tuple[int, int, str]:
    def number(name: str, default: int, low: int, high: int) -> int:
        return int_param(params.get(name, [None])[0], name, default, low, high)

    sort = params.get("_sort", ["-_lastUpdated"])
    if len(sort) != 1 or sort[0] not in _SORTS:
        raise InvalidInput(f"_sort must be one of {', '.join(_SORTS)}")
    return (number("_count", 20, 1, MAX_COUNT), number("_offset", 0, 0, 10**9),
            _SORTS[sort[0]])


def _priorities(params: dict[str, list[str]]) -> tuple[str, ...]:
    out = []
    for p in params.get("priority", []):
        if p not in _URGENCY_OF_PRIORITY:
            raise InvalidInput(f"priority must be one of {', '.join(_URGENCY_OF_PRIORITY)}")
        out.append(_URGENCY_OF_PRIORITY[p])
    return tuple(out)


def _task_filter(params: dict[str, list[str]]) -> TaskFilter:
    statuses = params.get("status", [])
    unknown = [s for s in statuses if s not in {t.value for t in TaskStatus}]
    if unknown:
        raise InvalidInput(f"status {unknown[0]!r} is not a FHIR task-status code")
    business = [v.rpartition("|")[2] for v in params.get("business-status", [])]
    escalated = None
    for tag in params.get("_tag", []):
        if tag != f"{fhir.FLAG_SYSTEM}|escalated":
            raise InvalidInput(f"_tag supports only {fhir.FLAG_SYSTEM}|escalated")
        escalated = True
    persons, records = _patients(params)
    return TaskFilter(statuses=tuple(statuses), business_statuses=tuple(business),
                      owner_sites=_sites(params.get("owner", []), "owner"),
                      requester_sites=_sites(params.get("requester", []), "requester"),
                      person_ids=persons, patient_ids=records,
                      task_ids=tuple(params.get("_id", [])), urgencies=_priorities(params),
                      escalated=escalated)


def _sr_filter(params: dict[str, list[str]]) -> TaskFilter:
    statuses: list[str] = []
    for s in params.get("status", []):
        if s not in _SR_STATUS:
            raise InvalidInput(f"ServiceRequest status must be one of {', '.join(_SR_STATUS)}")
        statuses += _SR_STATUS[s]
    based = []
    for v in params.get("based-on", []):
        kind, _, ident = v.rpartition("/")
        if kind not in ("", "ServiceRequest") or not ident:
            raise InvalidInput("based-on must be ServiceRequest/<id>")
        based.append(ident)
    persons, records = _patients(params)
    return TaskFilter(statuses=tuple(statuses),
                      owner_sites=_sites(params.get("performer", []), "performer"),
                      person_ids=persons, patient_ids=records,
                      task_ids=tuple(params.get("_id", [])), urgencies=_priorities(params),
                      based_on=tuple(based))


def _bundle(request: Request, entries: list[dict[str, Any]], total: int, offset: int,
            count: int) -> dict[str, Any]:
    base = str(request.url).split("?")[0]
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "_offset"]

    def link(relation: str, at: int) -> dict[str, str]:
        return {"relation": relation,
                "url": f"{base}?{urllib.parse.urlencode(query + [('_offset', str(at))])}"}

    links = [link("self", offset)]
    if offset + count < total:
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    root = str(request.base_url).rstrip("/")
    return {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links,
            "entry": [{"fullUrl": f"{root}/fhir/{e['resourceType']}/{e['id']}",
                       "resource": e, "search": {"mode": "match"}} for e in entries]}


def _service_request(row: TaskRow, stored: dict[str, Any] | None) -> dict[str, Any]:
    body = dict(stored or {"resourceType": "ServiceRequest", "id": row.task_id,
                           "intent": "order", "subject": fhir.patient_ref(
                               row.requester_site, row.patient_id, row.person_id)})
    body["status"] = fhir.service_request_status(row.status, row.business_status)
    body["meta"] = {"versionId": str(row.version), "lastUpdated": fhir.iso(row.updated_at)}
    return body


def create_referral_router(service: ReferralService, *,
                           store: GatewayStore | None = None) -> APIRouter:
    router = APIRouter()

    @router.get("/fhir/Task")
    async def search_tasks(request: Request) -> JSONResponse:
        principal = principal_of_request(request)
        async with logged(store, requester_of(request), "FHIR/Task?search") as note:
            params = _params(request, TASK_PARAMETERS)
            count, offset, sort = _paging(params)
            rows, total = await service.search(principal, _task_filter(params), offset=offset,
                                               limit=count, sort=sort)
            note.records = len(rows)
            return _fhir(_bundle(request, [fhir.task_resource(r) for r in rows], total, offset,
                                 count))

    @router.get("/fhir/Task/{task_id}")
    async def read_task(task_id: str, request: Request) -> JSONResponse:
        principal = principal_of_request(request)
        async with logged(store, requester_of(request), "FHIR/Task/read") as note:
            view = await service.view(principal, task_id)
            note.records = 1
            return _fhir(fhir.task_resource(view.task))

    @router.get("/fhir/ServiceRequest")
    async def search_requests(request: Request) -> JSONResponse:
        principal = principal_of_request(request)
        async with logged(store, requester_of(request), "FHIR/ServiceRequest?search") as note:
            params = _params(request, SERVICE_REQUEST_PARAMETERS)
            count, offset, sort = _paging(params)
            rows, total = await service.search(principal, _sr_filter(params), offset=offset,
                                               limit=count, sort=sort)
            stored = await service.resources_named([r.task_id for r in rows], "ServiceRequest")
            note.records = len(rows)
            return _fhir(_bundle(request, [_service_request(r, stored.get(r.task_id))
                                           for r in rows], total, offset, count))

    @router.get("/fhir/ServiceRequest/{request_id}")
    async def read_request(request_id: str, request: Request) -> JSONResponse:
        principal = principal_of_request(request)
        async with logged(store, requester_of(request), "FHIR/ServiceRequest/read") as note:
            view = await service.view(principal, request_id)
            note.records = 1
            return _fhir(_service_request(view.task, view.resources.get("ServiceRequest")))

    @router.get("/api/referrals/turnaround")
    async def turnaround_report() -> dict[str, Any]:
        return {"lines": [asdict(t) for t in await service.turnaround()]}

    @router.get("/api/referrals/alerts")
    async def alerts(request: Request, limit: int = 100) -> dict[str, Any]:
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be from 1 to 1000")
        found = await service.alerts(principal_of_request(request), limit=limit)
        return {"alerts": [{"referral": n.task_id, "at": n.at.isoformat(),
                            "audience": n.audience, "reason": n.reason} for n in found]}

    # the console's JSON API: create, move, read one, the packet (after the fixed paths
    # above, which its /api/referrals/{task_id} would otherwise shadow)
    router.include_router(create_referral_api_router(service, store=store))
    return router

