"""The doctor's two-way referral pages: "my referrals" with live status, one referral with
the moves the workflow allows now, and the new-referral form.

==============================================  ==========================================
``GET  /console/referrals``                     sent by my site and received by it
``GET  /console/referrals/live``                the polled fragment: every listed
                                                referral's status (htmx out-of-band swaps)
``GET  /console/referrals/new?person=``         the form (``direction``, ``urgency``,
                                                ``target_site`` choose the targets shown)
``GET  /console/referrals/new/targets``         fragment: targets and departments for the
                                                chosen direction and urgency
``POST /console/referrals/new/normalize``       fragment: the reason coded by
                                                ``/fhir/Condition/$normalize``
``POST /console/referrals/new/preview``         fragment: the packet the referral would
                                                carry
``POST /console/referrals/new``                 send it (→ "my referrals")
``GET  /console/referrals/{task_id}``           history, appointment, results, actions
``POST /console/referrals/{task_id}/{action}``  one move (→ back to the referral)
==============================================  ==========================================

Everything goes through the referral API (``/api/referrals…``, ``/fhir/Task``) as the
signed-in person; the workflow decides, the page shows its answer at the field.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from federation.console.patient_view import Person, record_at, with_person
from federation.console.referral_view import (
    ACT_INPUTS,
    ACTIONS,
    CONSENT_METHODS,
    CONSENTERS,
    DEPARTMENTS,
    DIRECTIONS,
    EVENTS,
    STATUSES,
    URGENCIES,
    act_body,
    direction,
    document_text,
    form_fields,
    referral_body,
    task_row,
)
from federation.console.web import (
    PREFIX,
    Api,
    ApiError,
    api,
    claims_or_none,
    form_of,
    nothing,
    page,
    redirect,
    segment,
    sites_of,
)

__all__ = ["create_doctor_referrals_router"]

#: referrals listed per direction (the newest)
LIST_SIZE = 30
#: how often the list asks for fresh statuses (seconds)
POLL_S = 3

VOCAB = {"statuses": STATUSES, "events": EVENTS, "urgencies": URGENCIES, "directions": DIRECTIONS,
         "departments": DEPARTMENTS, "action_labels": ACTIONS,
         "consent_methods": CONSENT_METHODS, "consenters": CONSENTERS}


async def _person_names(client: Api, person_ids: set[str]) -> dict[str, str]:
    """EMPI person id → name for the people of a list (one Person read each, at once)."""
    ids = sorted(person_ids)
    answers = await asyncio.gather(*(client.get(f"/fhir/Person/{segment(p)}") for p in ids),
                                   return_exceptions=True)
    out = {}
    for pid, answer in zip(ids, answers, strict=True):
        if isinstance(answer, dict):
            out[pid] = next((n.get("text") for n in answer.get("name") or [] if n.get("text")),
                            "")
        elif not isinstance(answer, ApiError):
            raise answer
    return out


async def _lists(client: Api, site: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sent, received = await asyncio.gather(
        client.get("/fhir/Task", requester=site, _count=str(LIST_SIZE)),
        client.get("/fhir/Task", owner=site, _count=str(LIST_SIZE)))
    return ([task_row(e["resource"]) for e in sent.get("entry") or []],
            [task_row(e["resource"]) for e in received.get("entry") or []])


async def _list_context(client: Api, sent: list[dict[str, Any]],
                        received: list[dict[str, Any]]) -> dict[str, Any]:
    """What the two lists show besides the Tasks: sites, directions, patients' names."""
    sites = await sites_of(client)
    _with_direction(sent, sites)
    _with_direction(received, sites)
    people = await _person_names(client, {r["person_id"] for r in sent + received
                                          if r["person_id"]})
    return {"sent": sent, "received": received, "sites": sites, "people": people}


def _with_direction(rows: list[dict[str, Any]], sites: dict[str, dict[str, Any]]) -> None:
    for r in rows:
        r["direction"] = direction(sites.get(r["requester"], {}).get("tier"),
                                   sites.get(r["owner"], {}).get("tier"))


async def _form_context(request: Request, form: dict[str, str]) -> dict[str, Any]:
    """What the new-referral form shows: the patient, the rules' targets, vocabularies."""
    claims = claims_or_none(request)
    assert claims is not None
    client = api(request)
    person_id = form.get("person", "")
    person_body, options, sites = await asyncio.gather(
        client.get(f"/fhir/Person/{segment(person_id)}") if person_id else nothing(),
        client.get("/api/referrals/options"), sites_of(client))
    person = None
    patient_id = None
    if person_body:
        person = with_person(Person(person_id, 1.0), person_body)
        patient_id = record_at(person_body, claims.site_id)
    chosen_dir = form.get("direction") or "upward"
    urgency = form.get("urgency") or "routine"
    targets = ((options.get("targets") or {}).get(chosen_dir) or {}).get(urgency) or []
    target = next((t for t in targets if t["id"] == form.get("target_site")), None)
    return {"person": person, "patient_id": patient_id, "options": options, "sites": sites,
            "targets": targets, "target": target, "form": {
                **form, "direction": chosen_dir, "urgency": urgency,
                "request_id": form.get("request_id") or uuid.uuid4().hex},
            **VOCAB}


def create_doctor_referrals_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("/referrals")
    async def referrals(request: Request) -> Response:
        claims = claims_or_none(request)
        assert claims is not None
        client = api(request)
        sent, received = await _lists(client, claims.site_id)
        return page(request, "doctor/referrals.html",
                    **await _list_context(client, sent, received), poll_s=POLL_S,
                    just_sent=request.query_params.get("sent"), **VOCAB)

    @router.get("/referrals/live")
    async def live(request: Request) -> Response:
        """Polled by the page: the listed referrals' statuses, swapped in place (one Task
        search per list, no patient data read) — and, when a referral was sent or
        arrived since the page last saw the lists (``known``: the ids it shows), both
        lists again, so a new one appears without a reload."""
        claims = claims_or_none(request)
        assert claims is not None
        client = api(request)
        sent, received = await _lists(client, claims.site_id)
        known = set(filter(None, request.query_params.get("known", "").split(",")))
        changed = known != {r["id"] for r in sent + received}
        lists = await _list_context(client, sent, received) if changed else {}
        return page(request, "doctor/referrals_live.html", rows=sent + received,
                    poll_s=POLL_S, now=dt.datetime.now(dt.UTC), changed=changed,
                    **lists, **VOCAB)

    @router.get("/referrals/new")
    async def new_form(request: Request) -> Response:
        context = await _form_context(request, dict(request.query_params))
        return page(request, "doctor/referral_new.html", fields={}, **context)

    @router.get("/referrals/new/targets")
    async def targets(request: Request) -> Response:
        context = await _form_context(request, dict(request.query_params))
        return page(request, "doctor/referral_targets.html", fields={}, **context)

    @router.post("/referrals/new/normalize")
    async def normalize(request: Request) -> Response:
        form = await form_of(request)
        fields: dict[str, Any] = {}
        text = form.get("reason_text", "").strip()
        if not text:
            fields["reason_text"] = ("先写下诊断，再点“编码”", "Write the diagnosis first")
        else:
            try:
                condition = await api(request).post("/fhir/Condition/$normalize",
                                                    {"text": text})
                coding = next(iter((condition.get("code") or {}).get("coding") or []), {})
                form |= {"reason_code": coding.get("code", ""),
                         "reason_system": coding.get("system", ""),
                         "reason_display": coding.get("display", "")}
                if not coding.get("code"):
                    fields["reason_code"] = ("没有找到对应的 ICD-10 编码，请手工填写",
                                             "No ICD-10 code found; enter it by hand")
            except ApiError as exc:
                fields["reason_text"] = str(exc)
        return page(request, "doctor/referral_reason.html", form=form, fields=fields)

    @router.post("/referrals/new/preview")
    async def preview(request: Request) -> Response:
        form = await form_of(request)
        context = await _form_context(request, form)
        packet: dict[str, Any] | None = None
        error: str | None = None
        if context["patient_id"]:
            try:
                packet = await api(request).post("/api/referrals/packet-preview",
                                                 {"patient_id": context["patient_id"]})
            except ApiError as exc:
                error = str(exc)
        counts: dict[str, int] = {}
        for entry in (packet or {}).get("entry") or []:
            kind = (entry.get("resource") or {}).get("resourceType", "?")
            counts[kind] = counts.get(kind, 0) + 1
        return page(request, "doctor/referral_preview.html", counts=counts, error=error,
                    total=sum(counts.values()))

    @router.post("/referrals/new")
    async def create(request: Request) -> Response:
        form = await form_of(request)
        context = await _form_context(request, form)
        body, fields = referral_body(form, context["patient_id"])
        message: str | None = None
        if not fields:
            try:
                task = await api(request).post("/api/referrals", body)
                return redirect(request, f"{PREFIX}/referrals?sent={segment(task['id'])}")
            except ApiError as exc:
                if exc.status >= 500:
                    raise
                fields = form_fields(exc.fields)
                if not exc.fields:
                    message = str(exc)
        return page(request, "doctor/referral_new.html", status=400, fields=fields,
                    api_message=message, **context)

    @router.get("/referrals/{task_id}")
    async def referral(task_id: str, request: Request) -> Response:
        return await _referral(request, task_id)

    @router.post("/referrals/{task_id}/{action}")
    async def act(task_id: str, action: str, request: Request) -> Response:
        form = await form_of(request)
        body, fields = act_body(action, form)
        message: str | None = None
        if not fields:
            try:
                await api(request).post(f"/api/referrals/{segment(task_id)}/{segment(action)}", body)
                return redirect(request, f"{PREFIX}/referrals/{segment(task_id)}")
            except ApiError as exc:
                if exc.status >= 500 or exc.status == 404:
                    raise
                fields = form_fields(exc.fields)
                message = None if set(fields) & ACT_INPUTS else str(exc)
        return await _referral(request, task_id, failed=action, fields=fields,
                               message=message, form=form, status=400)

    return router


async def _referral(request: Request, task_id: str, *, failed: str | None = None,
                    fields: dict[str, Any] | None = None, message: str | None = None,
                    form: dict[str, str] | None = None, status: int = 200) -> Response:
    client = api(request)
    view, sites, options = await asyncio.gather(
        client.get(f"/api/referrals/{segment(task_id)}"), sites_of(client),
        client.get("/api/referrals/options"))
    person_id = (view.get("patient") or {}).get("person_id")
    names = await _person_names(client, {person_id} if person_id else set())
    # the rules decide a redirect from the sender's site; offer the other sites of the
    # target's tier and let the workflow refuse what its rules do not allow
    ends = {(view.get("owner") or {}).get("site"), (view.get("requester") or {}).get("site")}
    owner_tier = sites.get((view.get("owner") or {}).get("site") or "", {}).get("tier")
    redirect_targets = [{"id": k, "name": v["name"]} for k, v in sites.items()
                        if k not in ends and v.get("tier") == owner_tier]
    return page(request, "doctor/referral.html", status=status, view=view, sites=sites,
                patient_name=names.get(person_id or ""), options=options,
                redirect_targets=redirect_targets, failed=failed, fields=fields or {},
                api_message=message, form=form or {}, doc_text=document_text, **VOCAB)
