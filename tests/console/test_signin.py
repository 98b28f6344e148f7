"""Signing in to the web console per site, the session it leaves, and what a person sees
when a page is not theirs, not there, or their session ended."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import httpx
import pytest

from federation.gateway.app import start_gateway
from federation.security.accounts import hash_password
from tests.archive.conftest import patient, put
from tests.conftest import gateway_settings

PASSWORD = "county doctor password"


def _account(gateway, user: str, roles: tuple[str, ...], site: str | None) -> None:
    gateway.store.put_account(user, roles, hash_password(PASSWORD), dt.datetime.now(dt.UTC),
                              site_id=site)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page carries no CSRF token"
    return found[1]


async def _sign_in(http: httpx.AsyncClient, site: str, user: str,
                   password: str = PASSWORD) -> httpx.Response:
    form_page = await http.get("/console/signin")
    assert form_page.status_code == 200
    return await http.post("/console/signin", data={
        "csrf": _csrf(form_page.text), "site": site, "username": user, "password": password})


async def test_a_site_doctor_signs_in_at_their_site_and_acts_there(gateway, http) -> None:
    _account(gateway, "dr-zhou", ("doctor",), "county-a")
    answer = await _sign_in(http, "county-a", "dr-zhou")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/patients"
    session = http.cookies.get("fed_session", path="/console")
    assert session
    cookie_header = answer.headers.get_list("set-cookie")
    assert any("fed_session=" in c and "HttpOnly" in c and "SameSite=strict" in c
               for c in cookie_header)
    # the session's token is an ordinary access token of that site's doctor
    claims = gateway.http_app.state.console.tokens.verify(session)
    assert (claims.user_id, claims.site_id, claims.roles, claims.purpose) == (
        "dr-zhou", "county-a", frozenset({"doctor"}), "TREAT")
    # and the API does not take it from a cookie: only console pages read the cookie
    api = await http.get("/api/consortium")
    assert api.status_code == 401


@pytest.mark.parametrize(("site", "password"), [("city-1", PASSWORD),
                                                ("county-a", "not the password")])
async def test_the_wrong_site_or_password_is_one_plain_answer(gateway, http, site,
                                                              password) -> None:
    _account(gateway, "dr-zhou", ("doctor",), "county-a")
    answer = await _sign_in(http, site, "dr-zhou", password)
    assert answer.status_code == 401
    assert "用户名或密码错误" in answer.text
    assert "fed_session" not in http.cookies
    # the attempt is an exchange like any sign-in (refused, ids only)
    rows = gateway.store.list_exchanges(limit=5)
    assert any(r.operation == "POST /auth/token" and r.outcome == "refused" for r in rows)


async def test_missing_fields_are_shown_at_the_field(gateway, http) -> None:
    answer = await _sign_in(http, "", "", "")
    assert answer.status_code == 400
    for field in ("site", "username", "password"):
        assert f'data-field="{field}"' in answer.text


async def test_a_form_without_its_csrf_token_is_refused(gateway, http) -> None:
    _account(gateway, "dr-zhou", ("doctor",), "county-a")
    await http.get("/console/signin")
    answer = await http.post("/console/signin", data={
        "csrf": "forged", "site": "county-a", "username": "dr-zhou", "password": PASSWORD})
    assert answer.status_code == 403
    assert 'data-status="403"' in answer.text
    assert "fed_session" not in http.cookies


async def test_pages_need_a_session_and_the_right_role(gateway, http) -> None:
    first = await http.get("/console/")
    assert first.status_code == 303
    assert first.headers["location"].startswith("/console/signin?next=%2Fconsole%2F")
    _account(gateway, "admin-liu", ("regional-admin",), None)
    answer = await _sign_in(http, "consortium", "admin-liu")
    assert answer.headers["location"] == "/console/admin"
    home = await http.get("/console/")
    assert home.headers["location"] == "/console/admin"
    missing = await http.get("/console/no-such-page")
    assert missing.status_code == 404
    assert 'data-status="404"' in missing.text and "Traceback" not in missing.text


async def test_english_on_request_and_kept(gateway, http) -> None:
    zh = await http.get("/console/signin")
    assert "登录" in zh.text and 'lang="zh-CN"' in zh.text
    en = await http.get("/console/signin?lang=en")
    assert "Sign in" in en.text and 'lang="en"' in en.text
    again = await http.get("/console/signin")
    assert 'lang="en"' in again.text


async def test_break_glass_past_the_sign_in_limit_says_so_not_wrong_password(
        pki, consortium, tmp_path) -> None:
    """Break-glass asks for the password again, through the same token endpoint and its
    limit on sign-ins per address: past that limit the doctor is told to wait, not that
    their (right) password is wrong."""
    gateway = await start_gateway(gateway_settings(   # 2 sign-ins at once, then 1 in 10 s
        pki, f"sqlite:///{tmp_path}/gateway.db", consortium, signin_rate_per_minute=6.0))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}",
                                     timeout=30) as http:
            await put(gateway, "city-1", patient("city-1", "pc"))   # county-a never saw them
            person = await asyncio.to_thread(gateway.archive_service.people.resolve, "pc")
            _account(gateway, "dr-zhou", ("doctor",), "county-a")
            assert (await _sign_in(http, "county-a", "dr-zhou")).status_code == 303
            csrf = _csrf((await http.get("/console/patients")).text)
            url = f"/console/patients/{person.person_id}/break-glass"
            wrong = await http.post(url, data={"csrf": csrf, "reason": "昏迷送入急诊",
                                               "password": "not the password"})
            assert wrong.status_code == 400 and 'data-field="password"' in wrong.text
            assert "密码不对" in wrong.text
            limited = await http.post(url, data={"csrf": csrf, "reason": "昏迷送入急诊",
                                                 "password": PASSWORD})
            assert limited.status_code == 429
            assert "操作太频繁" in limited.text
            assert "密码不对" not in limited.text and 'data-field="password"' not in limited.text
    finally:
        await gateway.stop(0.2)
