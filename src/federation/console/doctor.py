"""The county and township doctor's pages: find a patient, read their record across sites,
and run two-way referrals (:mod:`federation.console.doctor_referrals`).

==========================================  ==============================================
``GET  /console/patients``                  the search form
``POST /console/patients``                  search (form ``q``, ``birth``): the people
                                            found and the sites that know each
``GET  /console/patients/{person_id}``      the record across sites (``offset`` pages the
                                            timeline)
``POST /console/patients/{person_id}/break-glass``  read once with purpose ETREAT (form
                                            ``reason``, ``password``)
==========================================  ==============================================

Every page is the signed-in doctor's client of the gateway's HTTP API (:func:`~.web.api`):
PDQm and the EMPI's Person for the search, the archive's summary, ``$everything`` and
Observation search for the record. The search is a POST so that a name or ID number never
sits in a URL (access logs, browser history, the Referer header).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from federation.console.patient_view import (
    TIMELINE_TYPES,
    Person,
    bundle_issues,
    lab_charts,
    people_of,
    record_at,
    search_params,
    timeline,
    with_person,
)
from federation.console.web import (
    PREFIX,
    Api,
    ApiError,
    api,
    claims_or_none,
    form_of,
    page,
    password_grant,
    segment,
    sites_of,
)

__all__ = ["create_doctor_router", "site_names"]

#: people shown for one search (each costs one EMPI Person read)
MAX_PEOPLE = 10
#: timeline entries per page of ``$everything``
TIMELINE_PAGE = 200
#: laboratory Observations read for the trends
MAX_LABS = 1000


async def site_names(client: Api) -> dict[str, str]:
    """Site id → the site's name (the consortium's registry, no patient data)."""
    return {site_id: site["name"] for site_id, site in (await sites_of(client)).items()}


async def _people(client: Api, params: dict[str, str]) -> tuple[list[Person], int]:
    bundle = await client.get("/fhir/Patient", **params, _count="50")
    people, unlinked = people_of(bundle)
    people = people[:MAX_PEOPLE]
    answers = await asyncio.gather(*(client.get(f"/fhir/Person/{segment(p.person_id)}")
                                     for p in people), return_exceptions=True)
    for person, answer in zip(people, answers, strict=True):
        if isinstance(answer, dict):
            with_person(person, answer)
        elif isinstance(answer, ApiError):
            person.sites = sorted(person.matched_sites)
        else:
            raise answer
    return people, unlinked


async def _record(request: Request, person_id: str, *, token: str | None = None,
                  broke_glass: bool = False, glass: dict[str, Any] | None = None) -> Response:
    claims = claims_or_none(request)
    assert claims is not None
    client = api(request, token=token)
    try:
        offset = max(0, int(request.query_params.get("offset", "0")))
    except ValueError:
        offset = 0
    pid = segment(person_id)
    # the archive's three views in one read: one access decision, one exchange-log row
    person, names, views = await asyncio.gather(
        client.get(f"/fhir/Person/{pid}"), site_names(client),
        client.get(f"/api/archive/persons/{pid}/record", _type=TIMELINE_TYPES,
                   _count=str(TIMELINE_PAGE), _offset=str(offset), labs=str(MAX_LABS)),
        return_exceptions=True)
    refused: ApiError | None = None
    for answer in (person, names, views):
        if answer is views and isinstance(answer, ApiError) and answer.status == 403:
            refused = answer
        elif isinstance(answer, BaseException):
            raise answer
    assert isinstance(person, dict) and isinstance(names, dict)
    shown = Person(person_id, 1.0)
    with_person(shown, person)
    mine = record_at(person, claims.site_id)
    context: dict[str, Any] = {
        "person": shown, "names": names, "my_record": mine, "refused": refused,
        "broke_glass": broke_glass, "glass": glass or {}}
    if refused is None:
        assert isinstance(views, dict)
        summary, everything, labs = views["summary"], views["timeline"], views["labs"]
        links = {link["relation"]: link["url"] for link in everything.get("link") or []}
        issues = bundle_issues(everything) + [i for i in bundle_issues(labs)
                                              if i not in bundle_issues(everything)]
        context |= {
            "summary": summary, "issues": issues,
            "timeline": timeline(everything, [claims.site_id, *shown.sites]),
            "total": everything.get("total", 0), "offset": offset, "page_size": TIMELINE_PAGE,
            "has_next": "next" in links, "charts": lab_charts(labs, names)}
    return page(request, "doctor/record.html", status=403 if refused else 200, **context)


def create_doctor_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("/patients")
    async def patients(request: Request) -> Response:
        return page(request, "doctor/patients.html", form={}, fields={}, people=None)

    @router.post("/patients")
    async def search(request: Request) -> Response:
        form = await form_of(request)
        box, birth = form.get("q", ""), form.get("birth", "")
        params, fields = search_params(box, birth)
        people: list[Person] | None = None
        unlinked = 0
        names: dict[str, str] = {}
        message: str | None = None
        if not fields:
            client = api(request)
            try:
                (people, unlinked), names = await asyncio.gather(_people(client, params),
                                                                 site_names(client))
            except ApiError as exc:
                if exc.status not in (400, 404):
                    raise
                message = str(exc)
        return page(request, "doctor/patients.html",
                    status=400 if fields or message else 200,
                    form={"q": box, "birth": birth}, fields=fields, people=people,
                    unlinked=unlinked, names=names, api_message=message,
                    by_name="name" in params)

    @router.get("/patients/{person_id}")
    async def record(person_id: str, request: Request) -> Response:
        return await _record(request, person_id)

    @router.post("/patients/{person_id}/break-glass")
    async def break_glass(person_id: str, request: Request) -> Response:
        """Break-glass is a step up: the doctor says why and gives their password again;
        the token it yields (purpose ETREAT with the reason) reads this record once, and
        the archive flags the read for review. The session keeps its own purpose."""
        form = await form_of(request)
        claims = claims_or_none(request)
        assert claims is not None
        reason, password = form.get("reason", "").strip(), form.get("password", "")
        fields: dict[str, tuple[str, str]] = {}
        if len(reason) < 4:
            fields["reason"] = ("请写明紧急情况（至少 4 个字）",
                                "Say what the emergency is (at least 4 characters)")
        if not password:
            fields["password"] = ("请再次输入您的密码", "Enter your password again")
        token = None
        if not fields:
            answer = await password_grant(
                request, username=claims.user_id, password=password, site=claims.site_id,
                scope="user/*.read", purpose_of_use="ETREAT", reason=reason)
            if answer.status_code == 200:
                token = answer.json()["access_token"]
            elif answer.status_code == 400:     # invalid_grant: a wrong password
                fields["password"] = ("密码不对", "That password is wrong")
            else:   # too many sign-ins from this address (429), or the gateway failed
                raise ApiError.of(answer)
        if token is None:
            response = await _record(request, person_id,
                                     glass={"reason": reason, "fields": fields, "open": True})
            response.status_code = 400
            return response
        return await _record(request, person_id, token=token, broke_glass=True)

    return router
