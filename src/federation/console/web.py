"""What every console page shares: templates, the two languages, the session cookie, the
CSRF token, and the in-process client through which pages call the gateway's HTTP API.

The console holds no service of its own. A page is a signed-in person's client of the
same HTTP API everyone else uses: :func:`api` sends the request through the app itself
(ASGI, in process) with the person's bearer token, so the authorisation matrix, the rate
limits, the access policies and the exchange log apply to every byte a page shows — no
back door. The session cookie carries that access token (HttpOnly, SameSite=Strict); a
second value, the CSRF token, must come back with every form and htmx request.

Text is written in both languages where it is used: ``_("查找患者", "Find a patient")``
— Simplified Chinese by default, English when the person switched (``?lang=en``, kept in
a cookie).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from federation import errors
from federation.gateway.auth_api import CONSOLE_PREFIX, CONSOLE_SESSION_COOKIE
from federation.security.tokens import StaffClaims

__all__ = ["ApiError", "Console", "ServerTiming", "LANGS", "SESSION_COOKIE", "CSRF_COOKIE", "LANG_COOKIE",
           "api", "form_of", "instant", "nothing", "page", "password_grant", "segment",
           "sites_of"]

HERE = Path(__file__).parent
STATIC = HERE / "static"
SESSION_COOKIE = CONSOLE_SESSION_COOKIE
CSRF_COOKIE = "fed_csrf"
LANG_COOKIE = "fed_lang"
LANGS = ("zh", "en")
PREFIX = CONSOLE_PREFIX
#: the consortium's local time (China Standard Time, no daylight saving)
LOCAL = dt.timezone(dt.timedelta(hours=8), "CST")

_MAX_FORM_BYTES = 256 * 1024

_env = Environment(loader=FileSystemLoader(HERE / "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True,
                   lstrip_blocks=True)


def lang_of(request: Request) -> str:
    asked = request.query_params.get("lang")
    if asked in LANGS:
        return asked
    kept = request.cookies.get(LANG_COOKIE)
    return kept if kept in LANGS else "zh"


def instant(value: str | dt.datetime | None) -> dt.datetime | None:
    """An ISO instant from the API (``Z`` or an offset; none given: UTC) as an aware
    datetime; None for nothing."""
    if not value:
        return None
    when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(
        str(value).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _local(value: str | dt.datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An ISO instant (or datetime) in the consortium's local time; '' for nothing."""
    when = instant(value)
    return when.astimezone(LOCAL).strftime(fmt) if when else ""


def segment(value: str) -> str:
    """``value`` as one path segment of an API call (a ``/`` in an id stays inside it)."""
    return urllib.parse.quote(value, safe="")


async def nothing() -> None:
    """An awaitable that answers None: the slot of a call a page need not make."""
    return None


def _json_attr(value: Any) -> Markup:
    """JSON for a ``data-…`` attribute (charts read their option from one)."""
    return Markup(json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                  .replace("&", "\\u0026").replace("'", "\\u0027")
                  .replace("<", "\\u003c").replace(">", "\\u003e"))


_env.filters["local"] = _local
_env.filters["json_attr"] = _json_attr


@dataclass
class ApiError(Exception):
    """The API said no: its status and the OperationOutcome's messages, with the form
    field each one is about where the API named it (``issue.expression``)."""

    status: int
    messages: list[str]
    fields: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "; ".join(self.messages)

    @classmethod
    def of(cls, answer: httpx.Response) -> ApiError:
        try:
            body = answer.json()
        except ValueError:
            body = {}
        messages: list[str] = []
        fields: dict[str, str] = {}
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            for issue in body.get("issue") or []:
                text = str(issue.get("diagnostics") or issue.get("code") or "")
                for where in issue.get("expression") or []:
                    fields.setdefault(str(where), text)
                messages.append(text)
        elif isinstance(body, dict) and "error_description" in body:   # OAuth answers
            messages.append(str(body["error_description"]))
        return cls(answer.status_code, messages or [f"HTTP {answer.status_code}"], fields)


class Console:
    """One per app: the templates' context and the way to the app's own HTTP API."""

    def __init__(self, app: Any, tokens: Any) -> None:
        self.app = app
        self.tokens = tokens


@dataclass
class Api:
    """The signed-in person's client of the gateway's HTTP API, for one page."""

    client: httpx.AsyncClient

    async def get(self, path: str, **params: Any) -> Any:
        return await self._send("GET", path, params=params)

    async def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return await self._send("POST", path, json=body, params=params)

    async def raw(self, path: str, **params: Any) -> httpx.Response:
        answer = await self.client.get(path, params=_clean(params))
        if answer.status_code >= 400:
            raise ApiError.of(answer)
        return answer

    async def _send(self, method: str, path: str, *, params: Mapping[str, Any],
                    json: Any = None) -> Any:
        answer = await self.client.request(method, path, params=_clean(params), json=json)
        if answer.status_code >= 400:
            raise ApiError.of(answer)
        if not answer.content:
            return None
        return answer.json()


async def sites_of(client: Api) -> dict[str, dict[str, Any]]:
    """Site id → its name and tier, from the consortium's registry (no patient data)."""
    body = await client.get("/api/consortium")
    return {s["site_id"]: {"name": s.get("name") or s["site_id"], "tier": s.get("tier")}
            for s in body.get("sites") or []}


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v not in (None, "")}


def api(request: Request, *, token: str | None = None) -> Api:
    """A client of this app's HTTP API as the signed-in person (or with ``token``), from
    the person's own address (rate limits and the log see who really asked)."""
    console: Console = request.app.state.console
    host = request.client.host if request.client else "127.0.0.1"
    token = token if token is not None else request.cookies.get(SESSION_COOKIE, "")
    transport = httpx.ASGITransport(app=console.app, client=(host, 0))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Api(httpx.AsyncClient(transport=transport, base_url="http://console.internal",
                                 headers=headers, timeout=60.0))


async def password_grant(request: Request, **form: str) -> httpx.Response:
    """``POST /auth/token`` with a password grant, as the person at their own address
    (the sign-in limits count per address) — the token endpoint's own answer."""
    return await api(request, token="").client.post(
        "/auth/token", content=urllib.parse.urlencode({"grant_type": "password", **form}),
        headers={"Content-Type": "application/x-www-form-urlencoded"})


def csrf_token(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", "") or \
        _new_csrf(request)


def _new_csrf(request: Request) -> str:
    value = secrets.token_urlsafe(24)
    request.state.new_csrf = value
    return value


async def form_of(request: Request) -> dict[str, str]:
    """The posted form (urlencoded), after checking its CSRF token."""
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise errors.PayloadTooLarge("the form is too large")
    try:
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(
            body.decode("utf-8", "replace"), keep_blank_values=True,
            max_num_fields=200).items()}
    except ValueError:
        raise errors.InvalidInput("the form has too many fields") from None
    check_csrf(request, form.get("csrf"))
    return form


def check_csrf(request: Request, sent: str | None = None) -> None:
    """A state-changing console request must echo the session's CSRF token (form field
    ``csrf`` or header ``X-CSRF-Token``)."""
    expected = request.cookies.get(CSRF_COOKIE, "")
    sent = sent or request.headers.get("x-csrf-token", "")
    if not expected or not hmac.compare_digest(expected, sent):
        raise errors.PermissionDenied("this form has expired; reload the page and try again")


def claims_or_none(request: Request) -> StaffClaims | None:
    return getattr(request.state, "claims", None)


def translator(lang: str):  # noqa: ANN201 - a template global
    def _(zh: str, en: str) -> str:
        return en if lang == "en" else zh
    return _


def page(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with what every page needs (person, language, CSRF token)."""
    lang = lang_of(request)
    claims = claims_or_none(request)
    html = _env.get_template(template).render(
        request=request, claims=claims, lang=lang, _=translator(lang),
        csrf=csrf_token(request), path=request.url.path,
        any_role=lambda *roles: bool(claims and claims.roles & set(roles)),
        query=dict(request.query_params), **context)
    response = HTMLResponse(html, status_code=status)
    finish(request, response)
    return response


def finish(request: Request, response: Response) -> None:
    """Cookies a response must carry: the language asked for, a new CSRF token, a
    refreshed session token."""
    secure = request.url.scheme == "https"
    asked = request.query_params.get("lang")
    if asked in LANGS and asked != request.cookies.get(LANG_COOKIE):
        response.set_cookie(LANG_COOKIE, asked, max_age=365 * 86400, samesite="lax",
                            secure=secure, path=PREFIX)
    new_csrf = getattr(request.state, "new_csrf", None)
    if new_csrf and not request.cookies.get(CSRF_COOKIE):
        response.set_cookie(CSRF_COOKIE, new_csrf, httponly=True, samesite="strict",
                            secure=secure, path=PREFIX)
    refreshed = getattr(request.state, "refreshed_token", None)
    if refreshed:
        set_session(request, response, refreshed)


def set_session(request: Request, response: Response, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path=PREFIX)


def redirect(request: Request, to: str, *, htmx: bool | None = None) -> Response:
    """A redirect after a form (303) — for htmx requests an ``HX-Redirect``."""
    if htmx if htmx is not None else request.headers.get("hx-request") == "true":
        response: Response = Response(status_code=204, headers={"HX-Redirect": to})
    else:
        response = RedirectResponse(to, status_code=303)
    finish(request, response)
    return response


class ServerTiming:
    """ASGI middleware: console pages answer ``Server-Timing: app;dur=<ms>`` — the whole
    request inside the app, its API calls included (W3C Server Timing), which the
    browser's developer tools and ``bench/console_pages.py`` read. Other paths pass
    through untouched (streams stay streams)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX) \
                or scope["path"].startswith(PREFIX + "/static"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - started) * 1000
                message["headers"] = [*message.get("headers", []),
                                      (b"server-timing", f"app;dur={ms:.1f}".encode())]
            await send(message)

        await self.app(scope, receive, timed)
