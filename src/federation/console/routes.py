"""The console's own routes: sign-in per site, sign-out, each role's home, and the pages
the people of each kind use (:mod:`~federation.console.doctor`,
:mod:`~federation.console.specialist`, :mod:`~federation.console.admin`).

Every route here has its row in the authorisation matrix like any API route; a page a
person's role may not open answers the 403 page, an unknown one the 404 page, and a
session that ended sends the person back to sign in (:func:`console_error`).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from federation.console.web import (
    CSRF_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    ApiError,
    claims_or_none,
    form_of,
    page,
    password_grant,
    redirect,
    set_session,
)
from federation.security.tokens import CONSORTIUM
from federation.store import GatewayStore

__all__ = ["create_console_router", "console_crash", "console_error", "home_of",
           "ROLE_PURPOSE"]

log = logging.getLogger(__name__)

#: the purpose of use a console sign-in asks for, by the account's roles (first match)
ROLE_PURPOSE = (("regional-admin", "HOPERAT"), ("site-admin", "HOPERAT"),
                ("auditor", "HCOMPL"), ("specialist", "TREAT"), ("doctor", "TREAT"),
                ("nurse", "TREAT"))
#: each role's main page (first match)
HOMES = (("regional-admin", "/admin"), ("auditor", "/admin/audit"),
         ("site-admin", "/admin"), ("specialist", "/consults"), ("doctor", "/patients"),
         ("nurse", "/patients"))
SCOPES = "user/*.read user/*.write"


def home_of(roles: frozenset[str] | set[str]) -> str:
    for role, path in HOMES:
        if role in roles:
            return PREFIX + path
    return PREFIX + "/signin"


def _safe_next(value: str | None) -> str | None:
    """Only a path inside the console (never another host) may be the next page."""
    if not value:
        return None
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme or parsed.netloc or not parsed.path.startswith(PREFIX + "/"):
        return None
    return value


def create_console_router(store: GatewayStore) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    async def sites() -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(store.consortium_view)
        return [{"site_id": s.site_id, "name": s.name, "tier": s.tier} for s, _ in rows] + [
            {"site_id": CONSORTIUM, "name": None, "tier": CONSORTIUM}]

    @router.get("")
    @router.get("/")
    async def home(request: Request) -> Response:
        claims = claims_or_none(request)
        return RedirectResponse(home_of(claims.roles) if claims else PREFIX + "/signin",
                                status_code=303)

    @router.get("/signin")
    async def signin_page(request: Request) -> Response:
        return page(request, "signin.html", sites=await sites(),
                    next=_safe_next(request.query_params.get("next")),
                    form={"site": request.query_params.get("site", "")}, error=None)

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        form = await form_of(request)
        site, user = form.get("site", ""), form.get("username", "").strip()
        fields: dict[str, str] = {}
        if not site:
            fields["site"] = "choose your institution"
        if not user:
            fields["username"] = "enter your user name"
        if not form.get("password"):
            fields["password"] = "enter your password"
        error: str | None = None
        if not fields:
            account = await asyncio.to_thread(store.account, user)
            purpose = next((p for role, p in ROLE_PURPOSE
                            if account and role in account.roles), "TREAT")
            answer = await password_grant(request, username=user, password=form["password"],
                                          site=site, scope=SCOPES, purpose_of_use=purpose)
            if answer.status_code == 200:
                body = answer.json()
                roles = frozenset(account.roles) if account else frozenset()
                response = RedirectResponse(
                    _safe_next(form.get("next")) or home_of(roles), status_code=303)
                set_session(request, response, body["access_token"])
                return response
            error = str(ApiError.of(answer))
            if answer.status_code == 429:      # too many attempts from this address
                return console_error(request, 429, error)
        return page(request, "signin.html", status=400 if fields else 401,
                    sites=await sites(), next=_safe_next(form.get("next")),
                    form={"site": site, "username": user}, fields=fields, error=error)

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        await form_of(request)
        response = RedirectResponse(PREFIX + "/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        response.delete_cookie(CSRF_COOKIE, path=PREFIX)
        return response

    return router


def console_error(request: Request, status: int, message: str) -> Response:
    """The page a person sees when something went wrong: never a stack trace."""
    if status == 401:
        target = PREFIX + "/signin?" + urllib.parse.urlencode(
            {"next": request.url.path + (f"?{request.url.query}" if request.url.query else "")})
        return redirect(request, target)
    return page(request, "error.html", status=status, status_code=status, message=message)


def console_crash(request: Request, exc: Exception) -> Response:
    """An unexpected failure: logged with a reference (no patient data), shown as one."""
    reference = uuid.uuid4().hex[:12]
    log.error("console page failed (reference %s) on %s", reference, request.url.path,
              exc_info=exc)
    return page(request, "error.html", status=500, status_code=500, reference=reference,
                message=None)

