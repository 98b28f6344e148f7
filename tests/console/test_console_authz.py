"""The console's pages walked against the authorisation matrix, like the API's routes in
``tests/security/test_authz.py``: every page × every role. A role the matrix allows never
sees the 403 page; any other role sees it (a page, not JSON, and never a stack trace);
nobody signed in is sent to the sign-in page."""

from __future__ import annotations

import asyncio
import html
import re

import httpx

from federation.security.authz import rule_for
from federation.security.tokens import CONSORTIUM_ROLES, STAFF_ROLES
from tests.conftest import admin_token, staff_token
from tests.security.test_authz import _routes


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _purpose(role: str) -> str:
    return {"regional-admin": "HOPERAT", "site-admin": "HOPERAT",
            "auditor": "HCOMPL"}.get(role, "TREAT")


async def test_every_console_page_for_every_role(gateway, pki) -> None:
    pages = [r for r in _routes(gateway.http_app) if r[1].startswith("/console")]
    assert ("GET", "/console/signin") in pages
    tokens: dict[str, str] = {}
    for role in STAFF_ROLES:
        if role in CONSORTIUM_ROLES:
            tokens[role] = await asyncio.to_thread(admin_token, gateway, user=f"u-{role}",
                                                   roles=(role,), purpose=_purpose(role))
        else:
            tokens[role] = await asyncio.to_thread(staff_token, gateway, pki, user=f"u-{role}",
                                                   roles=(role,), purpose=_purpose(role))
    base = f"http://127.0.0.1:{gateway.http_port}"
    checked = 0
    for method, path in pages:
        rule = rule_for(method, path)
        assert rule is not None, (method, path)
        url = _concrete(path)
        async with httpx.AsyncClient(base_url=base, timeout=30) as anonymous:
            answer = await anonymous.request(method, url)
            if rule.public:
                assert answer.status_code not in (401, 403) or method == "POST", (method, path)
                continue
            assert answer.status_code in (303, 204), (method, path, answer.status_code)
            where = answer.headers.get("location") or answer.headers.get("hx-redirect")
            assert where.startswith("/console/signin"), (method, path, where)
        for role, token in tokens.items():
            async with httpx.AsyncClient(base_url=base, timeout=30,
                                         cookies={"fed_session": token}) as http:
                answer = await http.request(method, url)
            text = html.unescape(answer.text)
            refused = (answer.status_code == 403 and 'data-status="403"' in text
                       and f"{method} {path} " in text)
            if role in rule.roles and _purpose(role) in rule.purposes:
                assert not refused and answer.status_code != 500, (method, path, role, text[:300])
                assert "Traceback" not in text
            else:
                assert refused, (method, path, role, answer.status_code, text[:300])
                assert "Traceback" not in text
            checked += 1
    assert checked >= len(STAFF_ROLES)
