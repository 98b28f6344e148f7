"""The authorisation matrix, walked: every route of the gateway's HTTP API × every role.

For each route the test signs in as each staff role (site staff through their node,
consortium roles through a gateway account) and calls the route: a role the matrix
allows must never get 401/403, any other role must get 403; no token gets 401 on every
non-public route. A route missing from the matrix fails the test (default deny is then
what callers get, but the table must say so explicitly)."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from federation.security.authz import HTTP_AUTHZ, rule_for
from federation.security.tokens import CONSORTIUM_ROLES, STAFF_ROLES
from tests.conftest import admin_token, bearer, staff_token


def _routes(app) -> list[tuple[str, str]]:
    """Every (method, path template) served: the OpenAPI description lists the API's
    routes (included routers too), the plain routes are its documentation pages."""
    out = [(method.upper(), path) for path, ops in app.openapi()["paths"].items()
           for method in ops]
    for path, route in _served(app.routes):
        # plain routes (documentation pages) and the console's pages (not in the schema)
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            out += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return sorted(set(out))


def _served(routes, prefix: str = ""):
    """(path, route) of every route, into included routers (FastAPI keeps those as
    routers of their own rather than copying their routes)."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from _served(original.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Route):
            yield prefix + route.path, route


def api_routes(app) -> list[tuple[str, str]]:
    """The routes that answer JSON; the console's pages are walked by
    ``tests/console/test_console_authz.py`` (they answer pages, not OperationOutcomes)."""
    return [r for r in _routes(app) if not r[1].startswith("/console")]


def _app(gateway):
    return gateway.http_app


def test_every_route_has_a_row_and_every_row_a_route(gateway) -> None:
    routes = set(_routes(_app(gateway)))
    assert routes, "no routes found"
    missing = sorted(r for r in routes if rule_for(*r) is None)
    assert not missing, f"routes without an authorisation rule: {missing}"
    stale = sorted(set(HTTP_AUTHZ) - routes)
    assert not stale, f"rules for routes that do not exist: {stale}"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_the_matrix_walked_for_every_role(gateway, pki) -> None:
    tokens: dict[str, str] = {}
    for role in STAFF_ROLES:
        purpose = "HOPERAT" if role in ("site-admin", *CONSORTIUM_ROLES) else "TREAT"
        if role in CONSORTIUM_ROLES:
            tokens[role] = await asyncio.to_thread(admin_token, gateway, user=f"u-{role}",
                                                   roles=(role,), purpose=purpose)
        else:
            tokens[role] = await asyncio.to_thread(staff_token, gateway, pki, user=f"u-{role}",
                                                   roles=(role,), purpose=purpose)
    base = f"http://127.0.0.1:{gateway.http_port}"
    checked = 0
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for method, path in api_routes(_app(gateway)):
            rule = rule_for(method, path)
            url = _concrete(path)
            anonymous = await http.request(method, url)
            if rule.public:
                assert anonymous.status_code not in (401, 403), (method, path)
                continue
            assert anonymous.status_code == 401, (method, path, anonymous.status_code)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            for role, token in tokens.items():
                purpose_ok = ("HOPERAT" if role in ("site-admin", *CONSORTIUM_ROLES)
                              else "TREAT") in rule.purposes
                answer = await http.request(method, url, headers=bearer(token))
                # the matrix's refusals name the route; a route may still refuse on its
                # own grounds (the archive without a care relationship) — not the matrix
                matrix_refused = answer.status_code == 403 and answer.json()["issue"][0][
                    "diagnostics"].startswith(f"{method} {path} ")
                if role in rule.roles and purpose_ok:
                    assert answer.status_code != 401 and not matrix_refused, (
                        method, path, role, answer.text)
                else:
                    assert matrix_refused, (method, path, role, answer.status_code)
                checked += 1
    assert checked >= 50


async def test_purpose_and_scope_are_enforced(gateway, pki) -> None:
    base = f"http://127.0.0.1:{gateway.http_port}"
    research = await asyncio.to_thread(staff_token, gateway, pki, purpose="HRESCH")
    narrow = await asyncio.to_thread(staff_token, gateway, pki,
                                     scopes=("user/Observation.read",))
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        wrong_purpose = await http.get("/fhir/Patient", params={"name": "x"},
                                       headers=bearer(research))
        assert wrong_purpose.status_code == 403
        assert "purpose" in wrong_purpose.json()["issue"][0]["diagnostics"]
        no_scope = await http.get("/fhir/Patient", params={"name": "x"},
                                  headers=bearer(narrow))
        assert no_scope.status_code == 403
        assert "user/Patient.read" in no_scope.json()["issue"][0]["diagnostics"]
        forged = await http.get("/api/consortium", headers=bearer(research + "x"))
        assert forged.status_code == 401


@pytest.mark.parametrize("route", [r for r in HTTP_AUTHZ if not HTTP_AUTHZ[r].public])
def test_no_private_route_is_open_to_everyone_by_accident(route) -> None:
    rule = HTTP_AUTHZ[route]
    assert rule.roles and rule.roles <= set(STAFF_ROLES)


def test_only_the_documentation_pages_are_plain_routes(gateway) -> None:
    # the walk reads the API's routes from its OpenAPI description; plain routes are not
    # in it, so they must be only the documentation pages
    plain = [path for path, r in _served(_app(gateway).routes)
             if not isinstance(r, APIRoute)]
    assert set(plain) <= {"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
