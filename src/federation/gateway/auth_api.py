"""Sign-in on the gateway's HTTP API: the token endpoint and the bearer check.

``POST /auth/token`` is the OAuth 2.0 token endpoint, with two grants:

* the JWT bearer grant (RFC 7523 §2.1, as SMART Backend Services uses it) for site staff:
  ``grant_type`` = ``urn:ietf:params:oauth:grant-type:jwt-bearer`` and ``assertion`` = a
  staff assertion signed by the person's site (:mod:`federation.security.tokens`);
* the password grant (RFC 6749 §4.3) for the accounts the gateway keeps
  (:mod:`federation.security.accounts`) — consortium accounts, and the console accounts of
  site staff (an account with a site acts at that site): ``username``, ``password``,
  ``site`` (optional), ``scope``,
  ``purpose_of_use``. It exists for the gateway's own console; nothing else should hold
  a consortium password.

Its answers follow RFC 6749 §5.1/§5.2 (``access_token`` … or ``error`` +
``error_description``), not FHIR, because OAuth clients expect that shape. Every attempt,
granted or refused, is an exchange-log row (ids only).

:class:`Authorize` guards the whole app: it finds the matched route's row in the
authorisation matrix (:mod:`federation.security.authz`; no row → refused), reads
``Authorization: Bearer …`` for any non-public route, checks roles, purpose and scope,
and leaves the :class:`~federation.security.tokens.StaffClaims` in
``request.state.claims`` (:func:`claims_of`). Failures answer 401 with
``WWW-Authenticate: Bearer`` (RFC 6750 §3) or 403.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from federation import errors
from federation.gateway.fanout import Requester
from federation.security.accounts import verify_password
from federation.security.authz import authorize, rule_for
from federation.security.limits import RateLimiter
from federation.security.principal import Principal
from federation.security.tokens import (
    CONSORTIUM,
    JWT_BEARER_GRANT,
    AccessTokens,
    StaffClaims,
    TrustAnchor,
    account_claims,
    verify_staff_assertion,
)
from federation.store import ExchangeEntry, GatewayStore

#: the web console's pages (:mod:`federation.console`) and its session cookie
CONSOLE_PREFIX = "/console"
CONSOLE_SESSION_COOKIE = "fed_session"

__all__ = ["Authorize", "BearerAuth", "claims_of", "create_auth_router", "principal_of_request",
           "requester_of"]

_MAX_FORM_BYTES = 16 * 1024


class BearerAuth:
    """``Depends(BearerAuth(tokens))``: the caller's claims from a gateway access token."""

    def __init__(self, tokens: AccessTokens) -> None:
        self._tokens = tokens

    async def __call__(self, request: Request) -> StaffClaims:
        already = getattr(request.state, "claims", None)    # checked by Authorize
        if already is not None:
            return already
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header and request.url.path.startswith(CONSOLE_PREFIX):
            return self._console_session(request)
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.AuthenticationError(
                "sign in first: send 'Authorization: Bearer <access token>' (get one at "
                "POST /auth/token with your site's staff assertion)")
        return self._tokens.verify(token.strip())

    def _console_session(self, request: Request) -> StaffClaims:
        """The web console's pages carry the same access token in their session cookie
        (and only they: the API never reads cookies, so no other site's page can make a
        browser call it). A person's own navigation — not a page polling for news —
        renews a token past half its life, so a session ends after 15 idle minutes."""
        token = request.cookies.get(CONSOLE_SESSION_COOKIE, "")
        if not token:
            raise errors.AuthenticationError("sign in to the console first")
        claims = self._tokens.verify(token)
        left = (claims.expires_at - dt.datetime.now(dt.UTC)).total_seconds()
        polling = request.method == "GET" and request.headers.get("hx-request") == "true"
        if left < self._tokens.lifetime / 2 and not polling:
            request.state.refreshed_token, _ = self._tokens.issue(claims)
        return claims


class Authorize:
    """App-wide dependency: the authorisation matrix, applied to the matched route, and
    each signed-in person's rate limit."""

    def __init__(self, tokens: AccessTokens, limiter: RateLimiter,
                 store: GatewayStore | None = None) -> None:
        self._bearer = BearerAuth(tokens)
        self._limiter = limiter
        self._store = store

    async def __call__(self, request: Request) -> None:
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        rule = rule_for(request.method, path)
        what = f"{request.method} {path}"
        if rule is None:
            raise errors.PermissionDenied(f"{what} is not in the authorisation matrix; "
                                          "nobody may call it")
        if rule.public:
            return
        claims: StaffClaims | None = None
        try:
            claims = await self._bearer(request)
            self._limiter.take(f"{claims.site_id}/{claims.user_id}")
            authorize(rule, claims, what=what)
        except errors.FederationError as exc:
            if self._store is not None:     # refusals are exchanges too (ids only)
                await asyncio.to_thread(_log, self._store, dt.datetime.now(dt.UTC), claims,
                                        "refused", exc.code, operation=what)
            raise
        request.state.claims = claims


def claims_of(request: Request) -> StaffClaims:
    """The signed-in person of a request that passed :class:`Authorize`."""
    claims = getattr(request.state, "claims", None)
    if claims is None:
        raise errors.AuthenticationError("this call needs a signed-in person")
    return claims


def requester_of(request: Request) -> Requester:
    """The signed-in person as the exchange log records them (ids only)."""
    claims = claims_of(request)
    return Requester(kind="user", id=claims.user_id, site=claims.site_id,
                     purpose=claims.purpose)


def principal_of_request(request: Request) -> Principal:
    """The signed-in person as the workflows (referral, consult) see them: a site's staff
    member acts for their site with their roles; a regional administrator sees all."""
    claims = claims_of(request)
    return Principal("person", claims.user_id, claims.site_id, claims.roles, via="token")


def create_auth_router(store: GatewayStore, tokens: AccessTokens, trust: TrustAnchor,
                       limiter: RateLimiter) -> APIRouter:
    """``limiter`` counts sign-in attempts per client address (password guessing)."""
    router = APIRouter()

    @router.post("/auth/token", tags=["auth"])
    async def token(request: Request) -> JSONResponse:
        started = dt.datetime.now(dt.UTC)
        try:
            limiter.take(request.client.host if request.client else "unknown")
        except errors.RateLimited as exc:
            return _oauth_error(429, "slow_down", exc.message,
                                {"Retry-After": str(exc.retry_after)})
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            return _oauth_error(400, "invalid_request", "the request is too large")
        if not request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            return _oauth_error(400, "invalid_request", "send the form as "
                                "application/x-www-form-urlencoded (RFC 6749 §4.1.3)")
        try:
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                                 max_num_fields=10).items()}
        except ValueError:
            return _oauth_error(400, "invalid_request", "the form has too many fields")
        grant = form.get("grant_type")
        try:
            if grant == JWT_BEARER_GRANT:
                if not form.get("assertion"):
                    return _oauth_error(400, "invalid_request", "the form has no assertion")
                claims = verify_staff_assertion(form["assertion"], trust)
                await asyncio.to_thread(store.consume_assertion, claims.token_id,
                                        claims.site_id, claims.expires_at, started)
            elif grant == "password":
                claims = await asyncio.to_thread(_password_sign_in, store, form)
            else:
                return _oauth_error(400, "unsupported_grant_type",
                                    f"grant_type must be {JWT_BEARER_GRANT} (site staff) or "
                                    f"password (consortium accounts)")
        except errors.FederationError as exc:
            await asyncio.to_thread(_log, store, started, None, "refused", exc.code)
            return _oauth_error(400, "invalid_grant", exc.message)
        access, lifetime = tokens.issue(claims)
        await asyncio.to_thread(_log, store, started, claims, "ok", "OK")
        return JSONResponse({"access_token": access, "token_type": "Bearer",
                             "expires_in": lifetime, "scope": " ".join(sorted(claims.scopes)),
                             "site": claims.site_id, "purpose_of_use": claims.purpose},
                            headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    return router


def _password_sign_in(store: GatewayStore, form: dict[str, str]) -> StaffClaims:
    """An account the gateway keeps. ``site`` (optional; the console's sign-in page sends
    it) must be the account's site, or ``consortium``: a wrong site answers exactly as a
    wrong password does, at the same cost."""
    user, site = form.get("username", ""), form.get("site")
    account = store.account(user) if user else None
    usable = (account is not None and not account.disabled
              and (not site or site == (account.site_id or CONSORTIUM)))
    verify_password(account.password_hash if usable and account else None,
                    form.get("password", ""))
    assert account is not None
    return account_claims(account.user_id, account.site_id, account.roles,
                          form.get("scope", "").split() or ["user/*.read"],
                          form.get("purpose_of_use", "HOPERAT"), form.get("reason"))


def _oauth_error(status: int, error: str, description: str,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description},
                        status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


def _log(store: GatewayStore, started: dt.datetime, claims: StaffClaims | None,
         outcome: str, status: str, *, operation: str = "POST /auth/token") -> None:
    store.log_exchange(ExchangeEntry(
        at=started, correlation_id=uuid.uuid4().hex, requester_kind="user",
        requester_id=claims.user_id if claims else "(unverified)",
        requester_site=claims.site_id if claims else None, target_site=None,
        operation=operation, purpose=claims.purpose if claims else None,
        patient_ref=None, outcome=outcome, status_code=status,
        detail=("break-glass" if claims and claims.break_glass else ""),
        duration_ms=(dt.datetime.now(dt.UTC) - started).total_seconds() * 1000))
