"""The specialist's pages (issue 9): the consult pool inbox, the case with its material,
the report signed in the browser, an interactive session booked in a free slot.

Routes (all under ``/console``; every one a client of the consult HTTP API as the
signed-in person, so pools, parties, states and the exchange log apply):

* ``GET /consults`` — the inbox: the pools' unclaimed requests with their time limits
  counting down, mine, reported (a doctor sees their site's consults);
  ``GET /consults/inbox`` is the same as a fragment, polled every few seconds.
* ``POST /consults/{id}/act/{action}`` (form: ``csrf``, ``note``, ``to_user``,
  ``slot_start``, ``version``, ``from=inbox``) — claim, decline, hand-over, schedule,
  start, end, ack, cancel. From the inbox (htmx) the answer is the inbox fragment with
  the outcome said in it; from the case page a redirect back to it, or the page with the
  refusal in place. A claim someone else made first is said as such.
* ``GET /consults/{id}`` — the case: question, patient, prior records (or the archive's
  refusal), the material, the report form, the signed versions and their verification.
* ``GET /consults/{id}/studies/{study}/{name}/view`` — the API's rendering (PNG, JSON,
  image) streamed back with its content type, for ``<img>``;
  ``GET …/ecg`` — the ECG drawn as a 12-lead chart (fragment).
* ``POST /consults/{id}/report-draft`` (JSON ``{conclusion, codes, amend}``, header
  ``X-CSRF-Token``) → the API's ``{report, to_sign, version}``; the page signs ``to_sign``
  with the key the specialist chose (``static/js/sign.js``; the key stays in the browser)
  and posts ``POST /consults/{id}/report`` (JSON ``{report, signature, certificate,
  amend}``) → ``{redirect}``. Refusals answer ``{error, fields}`` with the API's status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from federation.console.specialist_views import (
    case_line,
    ecg_option,
    free_slots,
    lines,
    pool_role,
    report_versions,
    resources_of,
)
from federation.console.web import (
    PREFIX,
    ApiError,
    api,
    check_csrf,
    claims_or_none,
    form_of,
    nothing,
    page,
    redirect,
)
from federation.errors import InvalidInput

__all__ = ["create_specialist_router", "ACTIONS"]

#: the moves a console form may ask for (report and amend go through the signing page)
ACTIONS = ("claim", "decline", "hand-over", "schedule", "start", "end", "ack", "cancel")
INBOX_SIZE = 50
VIEW_PARAMS = ("frame", "wc", "ww", "seconds")


def _roles(request: Request) -> frozenset[str]:
    claims = claims_or_none(request)
    return frozenset(claims.roles) if claims else frozenset()


def _me(request: Request) -> tuple[str, str]:
    claims = claims_or_none(request)
    return (claims.user_id, claims.site_id or "") if claims else ("", "")


async def _json_body(request: Request) -> dict[str, Any]:
    check_csrf(request)
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


def _refusal(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": str(exc), "fields": exc.fields}, status_code=exc.status)


async def _inbox(request: Request) -> dict[str, Any]:
    """The inbox's lists, fetched at once: a specialist's pool requests, theirs, their
    reported ones; anyone else's (a doctor's) their site's consults."""
    client = api(request)
    if "specialist" in _roles(request):
        pool, mine, done = await asyncio.gather(
            client.get("/api/consults", status="requested", _count=INBOX_SIZE),
            client.get("/api/consults", mine="true", status="accepted,in-progress",
                       _count=INBOX_SIZE),
            client.get("/api/consults", mine="true", status="completed", _count=INBOX_SIZE))
        return {"specialist": True, "pool": lines(pool), "mine": lines(mine),
                "done": lines(done), "totals": {"pool": pool.get("total", 0),
                                                "mine": mine.get("total", 0),
                                                "done": done.get("total", 0)}}
    ours = await client.get("/api/consults", _count=INBOX_SIZE)
    return {"specialist": False, "ours": lines(ours), "totals": {"ours": ours.get("total", 0)}}


async def _claimed_by_other(request: Request, consult_id: str) -> str | None:
    """After a refused claim: who holds the consult now, when it is not me."""
    try:
        bundle = await api(request).get(f"/api/consults/{consult_id}")
    except ApiError:
        return None
    task = case_line(resources_of(bundle)["Task"][0])
    if task.owner and task.owner[0] != _me(request)[0]:
        return f"{task.owner[0]} @ {task.owner[1]}"
    return None


def _details(form: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {k: form[k].strip() for k in ("note", "to_user", "slot_start")
                            if form.get(k, "").strip()}
    if form.get("version", "").isdigit():
        body["expected_version"] = int(form["version"])
    return body


def create_specialist_router(ca_pem: bytes | None = None) -> APIRouter:
    """``ca_pem``: the consortium CA certificate, to show whether each signed report
    verifies (``federation consult verify``'s check); without it the page says so."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("/consults")
    async def inbox_page(request: Request) -> Response:
        return page(request, "specialist/inbox.html", **await _inbox(request), outcome=None)

    @router.get("/consults/inbox")
    async def inbox_fragment(request: Request) -> Response:
        """The lists alone, polled by the inbox page (what was just done stays said)."""
        return page(request, "specialist/_lists.html", **await _inbox(request))

    @router.post("/consults/{consult_id}/act/{action}")
    async def act(consult_id: str, action: str, request: Request) -> Response:
        form = await form_of(request)
        from_inbox = form.get("from") == "inbox" and request.headers.get("hx-request") == "true"
        if action not in ACTIONS:
            raise InvalidInput(f"'{action}' is not something this page can do; it can "
                               f"{', '.join(ACTIONS)}")
        if action == "hand-over" and not form.get("to_user", "").strip():
            message = "写明交给哪位同事（用户名） / name the colleague (user name) to hand it to"
            return await _after(request, consult_id, action, from_inbox,
                                ApiError(400, [message], {"to_user": message}))
        try:
            await api(request).post(f"/api/consults/{consult_id}/{action}", _details(form))
        except ApiError as exc:
            if action == "claim" and exc.status == 409:
                holder = await _claimed_by_other(request, consult_id)
                if holder:
                    exc = ApiError(409, [f"已被 {holder} 抢先认领 / {holder} claimed it first"])
            return await _after(request, consult_id, action, from_inbox, exc)
        if from_inbox and action != "claim":
            return page(request, "specialist/_inbox.html", **await _inbox(request),
                        outcome={"ok": True, "action": action, "consult": consult_id})
        return redirect(request, f"{PREFIX}/consults/{consult_id}")

    async def _after(request: Request, consult_id: str, action: str, from_inbox: bool,
                     exc: ApiError) -> Response:
        """A refused move, said where it was asked for."""
        failed = {"ok": False, "action": action, "consult": consult_id, "message": str(exc),
                  "fields": exc.fields}
        if from_inbox:       # 200: htmx swaps only answers it takes as successes
            return page(request, "specialist/_inbox.html", **await _inbox(request),
                        outcome=failed)
        return await _case(request, consult_id, status=exc.status, outcome=failed)

    @router.get("/consults/{consult_id}")
    async def case_page(consult_id: str, request: Request) -> Response:
        return await _case(request, consult_id)

    async def _case(request: Request, consult_id: str, *, status: int = 200,
                    outcome: dict[str, Any] | None = None) -> Response:
        client = api(request)
        bundle, studies = await asyncio.gather(
            client.get(f"/api/consults/{consult_id}"),
            client.get(f"/api/consults/{consult_id}/studies"))
        found = resources_of(bundle)
        task = case_line(found["Task"][0])
        request_ = (found.get("ServiceRequest") or [{}])[0]
        pool_id = ((request_.get("performerType") or {}).get("coding") or [{}])[0].get("code")
        me, roles = _me(request), _roles(request)
        mine = task.owner is not None and task.owner[0] == me[0]
        wants_slots = task.mode == "interactive" and task.business == "claimed" and mine
        person, summary, slots = await asyncio.gather(
            _maybe(client.get(f"/fhir/Person/{task.person_id}")) if task.person_id
            else nothing(), _maybe(client.get(f"/api/archive/persons/{task.person_id}/summary"))
            if task.person_id else nothing(),
            _maybe(_slots(request, pool_id)) if wants_slots and pool_id else nothing())
        appointment = (found.get("Appointment") or [None])[0]
        link = next((e.get("valueUrl") for e in (appointment or {}).get("extension") or []
                     if e.get("url", "").endswith(":meeting-link")), None)
        return page(
            request, "specialist/case.html", status=status, task=task, sr=request_,
            question=" ".join(n.get("text", "") for n in request_.get("note") or []),
            reason=[c.get("text") or (c.get("coding") or [{}])[0].get("display")
                    for c in request_.get("reasonCode") or []],
            pool=(request_.get("performerType") or {}).get("text") or pool_id,
            studies=studies.get("studies", []), person=person, summary=summary,
            slots=slots, appointment=appointment, meeting_link=link,
            reports=report_versions(found, ca_pem), mine=mine,
            is_specialist="specialist" in roles, is_requester=me[1] == task.requester_site,
            outcome=outcome)

    async def _slots(request: Request, pool_id: str) -> list[dt.datetime]:
        client = api(request)
        roles, booked = await asyncio.gather(
            client.get("/fhir/PractitionerRole"),
            client.get("/api/consults", mine="true", status="accepted", _count=200))
        taken = [t.session_start for t in lines(booked) if t.session_start]
        return free_slots(pool_role(roles, pool_id), taken, dt.datetime.now(dt.UTC))

    @router.get("/consults/{consult_id}/studies/{study_id}/{name}/view")
    async def view(consult_id: str, study_id: str, name: str, request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if k in VIEW_PARAMS}
        shown = await api(request).raw(
            f"/api/consults/{consult_id}/studies/{study_id}/{name}/view", **params)
        return Response(shown.content, media_type=shown.headers.get("content-type"),
                        headers={"Cache-Control": "private, no-store",
                                 "X-Content-Type-Options": "nosniff",
                                 "X-Object-SHA256": shown.headers.get("x-object-sha256", "")})

    @router.get("/consults/{consult_id}/studies/{study_id}/{name}/ecg")
    async def ecg(consult_id: str, study_id: str, name: str, request: Request) -> Response:
        try:
            waves = await api(request).get(
                f"/api/consults/{consult_id}/studies/{study_id}/{name}/view")
        except ApiError as exc:     # said in place of the chart, not as a whole page
            return page(request, "specialist/_ecg.html", error=str(exc), option=None,
                        name=name, waves=None)
        return page(request, "specialist/_ecg.html", error=None, name=name, waves={
            k: waves.get(k) for k in ("rate_hz", "unit", "seconds", "samples")},
            option=ecg_option(waves), leads=len(waves.get("leads") or {}))

    @router.post("/consults/{consult_id}/report-draft")
    async def report_draft(consult_id: str, request: Request) -> Response:
        body = await _json_body(request)
        try:
            draft = await api(request).post(f"/api/consults/{consult_id}/report-draft", {
                "conclusion": body.get("conclusion", ""), "codes": body.get("codes") or [],
                "amend": body.get("amend") is True})
        except ApiError as exc:
            return _refusal(exc)
        return JSONResponse(draft)

    @router.post("/consults/{consult_id}/report")
    async def report(consult_id: str, request: Request) -> Response:
        body = await _json_body(request)
        if not str(body.get("certificate") or "").strip():
            return JSONResponse({"error": "选择或粘贴您的证书（.crt） / choose or paste your "
                                          "certificate (.crt)", "fields": {
                                              "certificate": "required"}}, status_code=400)
        action = "amend" if body.get("amend") is True else "report"
        try:
            await api(request).post(f"/api/consults/{consult_id}/{action}", {
                "report": body.get("report"), "signature": body.get("signature", ""),
                "certificate": body.get("certificate", "")})
        except ApiError as exc:
            return _refusal(exc)
        return JSONResponse({"redirect": f"{PREFIX}/consults/{consult_id}?signed={action}"})

    return router


async def _maybe(call: Any) -> dict[str, Any]:
    """An answer, or the API's refusal kept to be said in the page (``{"refused": …}``)."""
    try:
        return {"value": await call}
    except ApiError as exc:
        return {"refused": str(exc), "status": exc.status}


