"""Referrals on the gateway's JSON API: what the web console needs to run two-way
referrals for a signed-in person (bearer token) — send, move, read one, see the packet.

* ``GET /api/referrals/options`` → what the signed-in person's site may refer to, from the
  consortium's rules (:mod:`.rules`): ``targets[direction][urgency]`` = sites (``id``,
  ``name``, ``tier``, ``departments``), ``urgencies`` with their time limits,
  ``reject_reasons``, ``consent_methods``, ``result_kinds``, ``actions`` and whether the
  person may ``create`` referrals at all;
* ``POST /api/referrals`` (JSON: ``patient_id`` at the caller's site, ``direction``
  upward|downward, ``urgency``, ``target_site``, ``department``, ``reason`` {``system``,
  ``code``, ``display``, ``text``}, ``notes``, ``consent`` {``method``}, ``based_on``,
  ``discharge_summary``, ``follow_ups`` [{``days_from_now``, ``what``}], ``request_id``)
  → the FHIR Task, 201 (200 and the first Task for a repeated ``request_id``). The site
  and the person are the token's, never the body's;
* ``POST /api/referrals/{id}/{action}`` (JSON details: ``note``, ``appointment_start``,
  ``admission_note``, ``reason_code``, ``reason_text``, ``target_site``, ``department``,
  ``result_text``, ``result_kind``, ``result_resource``, ``visit_date``,
  ``expected_version``) → the updated FHIR Task; ``action`` is one of :data:`ACT_ACTIONS`;
* ``GET /api/referrals/{id}`` → one JSON view of the referral for a page: the Task and
  ServiceRequest, history, appointment, notes, results, follow-ups, related referrals,
  the packet's state, and ``actions``: the moves the signed-in person may make now (asked
  of the state machine, :meth:`~federation.workflow.state.TransitionTable.permitted`);
* ``GET /api/referrals/{id}/packet`` → the packet Bundle once assembled, else 409;
* ``POST /api/referrals/packet-preview`` (JSON: ``patient_id``) → the packet a referral
  of that patient would carry, fetched now from the caller's own node (nothing stored).

Errors are FHIR OperationOutcomes; a request field at fault is named in
``issue[0].expression`` for the form to show it beside the field. Unknown fields are
refused, not ignored. Every call is one exchange-log row: moves and previews are logged
by the service, reads here, and a request refused before it reached the service here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from federation.errors import Conflict, FederationError, InvalidInput
from federation.gateway.auth_api import principal_of_request, requester_of
from federation.identity.lookup import logged
from federation.referral import fhir
from federation.referral.moves import RESULT_LOINC, Details
from federation.referral.rules import DIRECTIONS, SiteFacts
from federation.referral.service import CONSENT_METHODS, NewReferral, ReferralService, ReferralView
from federation.referral.state import ACTIONS, UPWARD, ReferralState
from federation.security.principal import Principal
from federation.store import GatewayStore
from federation.workflow.records import EventRow, TaskFilter
from federation.workflow.state import Actor, Party

__all__ = ["ACT_ACTIONS", "Fields", "create_referral_api_router", "details", "new_referral",
           "options_json", "view_json"]

FHIR_JSON = "application/fhir+json"
#: the moves ``POST /api/referrals/{id}/{action}`` takes (creating has its own route)
ACT_ACTIONS = tuple(a for a in ACTIONS if a != "create")
#: fields that would let a request speak for another site or person
_FROM_TOKEN = ("requester_site", "requester_user", "site", "site_id", "user_id")
MAX_FOLLOW_UPS = 50


def _fhir(body: dict[str, Any], status: int = 200,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


# ---------------------------------------------------------------------------- request body


class Fields:
    """One JSON object of a request, read field by field: each value's type is checked,
    an error names the field (dotted for nested ones), and :meth:`done` refuses the
    fields nobody read — a misspelt field must not be silently dropped."""

    def __init__(self, data: Any, where: str = "") -> None:
        if not isinstance(data, dict):
            raise InvalidInput(f"{where or 'the request body'} must be a JSON object",
                               field=where or None)
        self._data, self._where, self._read = data, where, set[str]()

    def given(self, key: str) -> bool:
        return self._data.get(key) is not None

    def _path(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self._data.get(key)

    def _bad(self, key: str, what: str) -> InvalidInput:
        return InvalidInput(f"{self._path(key)} must be {what}", field=self._path(key))

    def text(self, key: str) -> str:
        value = self._get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value.strip()

    def whole(self, key: str) -> int | None:
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "a whole number")
        return value

    def when(self, key: str) -> dt.datetime | None:
        text = self.text(key)
        if not text:
            return None
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise self._bad(key, "an ISO 8601 date-time, e.g. 2026-12-01T09:30+08:00") from None
        if value.tzinfo is None:
            raise self._bad(key, "a date-time with a time zone, e.g. 2026-12-01T09:30+08:00")
        return value

    def obj(self, key: str) -> Fields | None:
        value = self._get(key)
        return None if value is None else Fields(value, self._path(key))

    def raw_object(self, key: str) -> dict[str, Any] | None:
        value = self._get(key)
        if value is not None and not isinstance(value, dict):
            raise self._bad(key, "a JSON object")
        return value

    def objects(self, key: str, most: int) -> list[Fields]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._bad(key, "a list")
        if len(value) > most:
            raise self._bad(key, f"a list of at most {most}")
        return [Fields(v, f"{self._path(key)}[{i}]") for i, v in enumerate(value)]

    def done(self) -> None:
        for key in self._data:
            if key not in self._read:
                raise InvalidInput(f"{self._path(key)} is not a field here; the fields are "
                                   f"{', '.join(sorted(self._read))}", field=self._path(key))


async def _body(request: Request) -> Fields:
    raw = await request.body()
    if not raw:
        return Fields({})
    try:
        return Fields(await request.json())
    except ValueError:
        raise InvalidInput("the request body must be JSON") from None


def new_referral(body: Fields) -> NewReferral:
    """A create request as the service takes it (the service checks the values)."""
    for key in _FROM_TOKEN:
        if body.given(key):
            raise InvalidInput(f"{key} is not a field here: a referral is sent from the site, "
                               "and by the person, you signed in as", field=key)
    reason = body.obj("reason")
    coding: dict[str, str] = {}
    if reason is not None:
        coding = {k: v for k in ("system", "code", "display", "text") if (v := reason.text(k))}
        reason.done()
        if coding.get("code") and "system" not in coding:
            coding["system"] = fhir.ICD10
    consent = body.obj("consent")
    method = None
    if consent is not None:
        method = consent.text("method") or None
        consent.done()
    plan = []
    for visit in body.objects("follow_ups", MAX_FOLLOW_UPS):
        days = visit.whole("days_from_now")
        if days is None:
            raise InvalidInput(f"{visit._path('days_from_now')} is required",
                               field=visit._path("days_from_now"))
        plan.append((days, visit.text("what")))
        visit.done()
    new = NewReferral(
        patient_id=body.text("patient_id"), urgency=body.text("urgency") or "routine",
        direction=body.text("direction") or "upward",
        target_site=body.text("target_site") or None,
        department=body.text("department") or None, reason=coding, notes=body.text("notes"),
        consent_method=method, request_id=body.text("request_id") or None,
        based_on=body.text("based_on") or None,
        discharge_summary=body.text("discharge_summary"), follow_ups=tuple(plan))
    body.done()
    return new


def details(body: Fields) -> tuple[Details, int | None]:
    """An act request's details and its ``expected_version`` (optimistic concurrency)."""
    d = Details(
        note=body.text("note"), appointment_start=body.when("appointment_start"),
        admission_note=body.text("admission_note"), reason_code=body.text("reason_code"),
        reason_text=body.text("reason_text"), result_text=body.text("result_text"),
        result_kind=body.text("result_kind") or "consult-note",
        result_resource=body.raw_object("result_resource"), visit_date=body.when("visit_date"),
        target_site=body.text("target_site"), department=body.text("department"))
    version = body.whole("expected_version")
    body.done()
    return d, version


@contextlib.asynccontextmanager
async def _refused_here(store: GatewayStore | None, request: Request,
                        operation: str) -> AsyncIterator[None]:
    """A request refused before it reached the service is still one exchange-log row
    (the service logs everything that reaches it)."""
    try:
        yield
    except FederationError as exc:
        async with logged(store, requester_of(request), operation):
            raise exc


# ---------------------------------------------------------------------------- answers


def _event(e: EventRow) -> dict[str, Any]:
    return {"version": e.version, "at": fhir.iso(e.at), "action": e.action, "by": e.actor,
            "site": e.actor_site,
            "from": ({"status": e.from_status, "business_status": e.from_business}
                     if e.from_status else None),
            "to": {"status": e.to_status, "business_status": e.to_business},
            "note": e.note, "detail": dict(e.detail)}


def _follow_up_visits(resources: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    names = sorted((n for n in resources if n.startswith("FollowUp") and n[8:].isdigit()),
                   key=lambda n: int(n[8:]))
    return [resources[n] for n in names]


def view_json(view: ReferralView, downward: list[dict[str, Any]]) -> dict[str, Any]:
    """One referral as a page renders it (``downward``: referrals based on this one)."""
    t, r, a = view.task, view.resources, view.task.attributes
    return {
        "id": t.task_id, "version": t.version, "direction": t.category, "urgency": t.urgency,
        "status": t.status, "business_status": t.business_status,
        "requester": {"site": t.requester_site, "user": t.requester_user},
        "owner": {"site": t.owner_site, "department": t.owner_department},
        "patient": {"id": t.patient_id, "site": t.requester_site, "person_id": t.person_id},
        "created": fhir.iso(t.created_at), "updated": fhir.iso(t.updated_at),
        "acknowledge_by": fhir.iso(t.ack_due_at), "complete_by": fhir.iso(t.complete_due_at),
        "acknowledged": fhir.iso(t.acknowledged_at), "completed": fhir.iso(t.completed_at),
        "closed": fhir.iso(t.closed_at), "escalated": fhir.iso(t.escalated_at),
        "reason": a.get("reason") or {}, "status_reason": a.get("status_reason"),
        "admission_note": a.get("admission_note"),
        "task": fhir.task_resource(t), "service_request": r.get("ServiceRequest"),
        "consent": r.get("Consent"), "care_plan": r.get("CarePlan"),
        "discharge_summary": r.get("DocumentReference"), "appointment": r.get("Appointment"),
        "history": [_event(e) for e in view.history],
        "notes": [{"at": fhir.iso(e.at), "by": e.actor, "action": e.action, "text": e.note}
                  for e in view.history if e.note],
        "results": [r["Result"]] if "Result" in r else [],
        "result_received": a.get("result_received"),
        "follow_up_visits": _follow_up_visits(r),
        "related": {"based_on": t.based_on, "replaces": t.replaces,
                    "redirected_from": a.get("redirected_from"),
                    "redirected_to": ({"site": a["redirected_to"], "id": a.get("redirect_task")}
                                      if a.get("redirected_to") else None),
                    "downward": downward},
        "packet": {"assembled": "Packet" in r,
                   "resources": len(r["Packet"].get("entry", [])) if "Packet" in r else 0,
                   "pending": view.pending},
        "deliveries": [{"site": d.site_id, "kind": d.kind, "purpose": d.purpose,
                        "queued": fhir.iso(d.created_at), "delivered": fhir.iso(d.delivered_at),
                        "acknowledged": fhir.iso(d.acked_at), "attempts": d.attempts}
                       for d in view.deliveries],
        "actions": view.permitted, "state_actions": view.allowed,
    }


def _may_create(who: Principal) -> bool:
    actor = Actor(who.describe(), frozenset({Party.REQUESTER}), who.roles)
    return bool(UPWARD.permitted(ReferralState.DRAFT, actor))


async def options_json(service: ReferralService, who: Principal) -> dict[str, Any]:
    """What ``who``'s site may refer to, and the vocabularies of the workflow."""
    rules = service.rules
    members = {s.site_id: s for s in await service.members()}
    facts = [SiteFacts(s.site_id, s.tier, s.parent_site_id) for s in members.values()]
    here = next((f for f in facts if f.site_id == who.site_id), None)

    def site(f: SiteFacts) -> dict[str, Any]:
        return {"id": f.site_id, "name": members[f.site_id].name, "tier": f.tier,
                "departments": list(rules.departments(f))}

    by_id = {f.site_id: f for f in facts}
    targets = {} if here is None else {
        direction: {u: [site(by_id[s]) for s in rules.targets(direction, u, here, facts)]
                    for u in rules.urgencies}
        for direction in DIRECTIONS}
    limits = rules.time_limits.limits
    return {
        "site": site(here) if here is not None else None,
        "create": here is not None and _may_create(who),
        "targets": targets,
        "urgencies": [{"code": u, "priority": fhir.PRIORITY.get(u, "routine"),
                       "acknowledge_within_s": int(limits[u].acknowledge.total_seconds()),
                       "complete_within_s": (int(limits[u].complete.total_seconds())
                                             if limits[u].complete else None)}
                      for u in rules.urgencies],
        "reject_reasons": [{"code": c, "display": d} for c, d in rules.reject_reasons.items()],
        "consent_methods": list(CONSENT_METHODS),
        "result_kinds": [{"code": k, "display": v[1]} for k, v in RESULT_LOINC.items()],
        "actions": list(ACT_ACTIONS),
        "rules": rules.source,
    }


# ---------------------------------------------------------------------------- routes


def create_referral_api_router(service: ReferralService, *,
                               store: GatewayStore | None = None) -> APIRouter:
    router = APIRouter()

    @router.get("/api/referrals/options")
    async def options(request: Request) -> dict[str, Any]:
        who = principal_of_request(request)
        async with logged(store, requester_of(request), "Referrals/Options"):
            return await options_json(service, who)

    @router.post("/api/referrals")
    async def create(request: Request) -> JSONResponse:
        who = principal_of_request(request)
        async with _refused_here(store, request, "Referrals/Create"):
            new = new_referral(await _body(request))
        row, created = await service.create(who, new)
        return _fhir(fhir.task_resource(row), 201 if created else 200,
                     {"Location": f"/fhir/Task/{row.task_id}"})

    @router.post("/api/referrals/packet-preview")
    async def preview(request: Request) -> JSONResponse:
        who = principal_of_request(request)
        async with _refused_here(store, request, "Referrals/PacketPreview"):
            body = await _body(request)
            patient_id = body.text("patient_id")
            body.done()
        return _fhir(await service.preview_packet(who, patient_id,
                                                  purpose=requester_of(request).purpose
                                                  or "TREAT"))

    @router.get("/api/referrals/{task_id}")
    async def read(task_id: str, request: Request) -> dict[str, Any]:
        who = principal_of_request(request)
        async with logged(store, requester_of(request), "Referrals/Get") as note:
            view = await service.view(who, task_id)
            downward, _ = await service.search(who, TaskFilter(based_on=(task_id,)), limit=50)
            note.records, note.target_site = 1, view.task.owner_site
            return view_json(view, [{"id": d.task_id, "status": d.status,
                                     "business_status": d.business_status,
                                     "owner_site": d.owner_site,
                                     "created": fhir.iso(d.created_at)} for d in downward])

    @router.get("/api/referrals/{task_id}/packet")
    async def packet(task_id: str, request: Request) -> JSONResponse:
        who = principal_of_request(request)
        async with logged(store, requester_of(request), "Referrals/Packet") as note:
            view = await service.view(who, task_id)
            found = view.resources.get("Packet")
            if found is None:
                why = f" ({'; '.join(view.pending)})" if view.pending else ""
                raise Conflict(f"the packet of referral {task_id} is not assembled yet: it is "
                               f"read from {view.task.requester_site}'s node{why}; try again "
                               "shortly", code="not-assembled")
            note.records = len(found.get("entry", []))
            return _fhir(found)

    @router.post("/api/referrals/{task_id}/{action}")
    async def act(task_id: str, action: str, request: Request) -> JSONResponse:
        who = principal_of_request(request)
        known = action in ACT_ACTIONS
        async with _refused_here(store, request,
                                 f"Referrals/{action}" if known else "Referrals/act"):
            if not known:
                raise InvalidInput(f"'{action[:40]}' is not a referral action; the actions are "
                                   f"{', '.join(ACT_ACTIONS)}", field="action")
            d, version = details(await _body(request))
        row = await service.act(who, task_id, action, d, expected_version=version)
        return _fhir(fhir.task_resource(row))

    return router
