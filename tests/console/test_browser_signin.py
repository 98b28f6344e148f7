"""Sign-in in a real browser: the form, its errors in the page, and the language switch."""

from __future__ import annotations

from tests.console.conftest import VIEWPORT


def test_a_wrong_password_is_said_in_the_page_and_english_on_request(
        browser, demo_consortium) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        doctor = demo_consortium.account("doctor", "county")
        page.goto(f"{demo_consortium.url}/console/signin")
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        page.select_option("#site", doctor.signin_site)
        page.fill("#username", doctor.user)
        page.fill("#password", "certainly not it")
        page.click("button[type=submit]")
        assert "用户名或密码错误" in page.locator("p.error").inner_text()
        assert "/console/signin" in page.url
        page.click("a.lang")
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.locator("h1").inner_text() == "Sign in"
        # the choice is kept for the next page
        page.goto(f"{demo_consortium.url}/console/signin")
        assert page.locator("h1").inner_text() == "Sign in"
    finally:
        context.close()


def test_each_person_lands_on_their_home_page(signed_in, demo_consortium) -> None:
    homes = {"doctor": "/console/patients", "specialist": "/console/consults",
             "regional-admin": "/console/admin", "auditor": "/console/admin/audit"}
    for role, home in homes.items():
        page = signed_in(demo_consortium.account(role))
        assert page.url.endswith(home), (role, page.url)
        assert page.locator(".who .user").inner_text() == demo_consortium.account(role).user
