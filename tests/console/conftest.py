"""The console in a real browser against the real demo consortium.

``demo_consortium`` starts what ``federation demo`` starts — the gateway and six node
agents as separate processes on loopback, with mutual TLS, on SQLite — waits until every
node is online and the archive has read every site's change feed, and seeds the demo's
console accounts. ``browser`` is Debian's Chromium driven by Playwright (never a browser
download); ``signed_in(account)`` opens a 1366×768 page signed in through the sign-in
form. Without Chromium these tests skip with the install command — except in CI, where
``.ci/run`` installs it and its absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from federation.demo.accounts import CONSOLE_ACCOUNTS, ConsoleAccount, seed_console_accounts
from federation.demo.runner import Supervisor
from federation.demo.signin import get_json
from federation.demo.workspace import DemoLayout, prepare_workspace
from federation.errors import Unavailable

ROOT = Path(__file__).resolve().parents[2]
#: where the tests leave each role's main page (the README shows them)
SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1366, "height": 768}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@dataclass(frozen=True)
class DemoConsortium:
    layout: DemoLayout
    accounts: tuple[ConsoleAccount, ...]

    @property
    def url(self) -> str:
        return self.layout.http_url

    def account(self, role: str, site_prefix: str = "") -> ConsoleAccount:
        return next(a for a in self.accounts
                    if role in a.roles and a.signin_site.startswith(site_prefix))

    def token(self, account: ConsoleAccount) -> str:
        """An access token of ``account`` for care (TREAT), as the console's sign-in
        gets one: the password grant at ``/auth/token``."""
        from federation.demo.signin import sign_in

        return str(sign_in(self.layout, {
            "grant_type": "password", "username": account.user,
            "password": account.password, "site": account.signin_site,
            "scope": "user/*.read user/*.write", "purpose_of_use": "TREAT"})["access_token"])

    def linked_record(self, site: str, column: str = "record_id", nth: int = 0) -> str:
        """A ``site`` record the EMPI has linked (its ``record_id`` or ``person_id``),
        read from the demo gateway's store as the test's own set-up (pages never read
        the store)."""
        from sqlalchemy import text

        from federation.settings import load_gateway_settings
        from federation.store import make_engine

        assert column in ("record_id", "person_id")
        engine = make_engine(load_gateway_settings(self.layout.gateway_config).database_url)
        try:
            with engine.connect() as conn:
                return str(conn.execute(text(
                    f"SELECT {column} FROM identity_record WHERE site_id = :s AND "
                    "state = 'linked' ORDER BY record_id LIMIT 1 OFFSET :n"),
                    {"s": site, "n": nth}).scalar_one())
        finally:
            engine.dispose()


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"the demo consortium did not get ready: {what} within {timeout:.0f} s")


@pytest.fixture(scope="session")
def demo_consortium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoConsortium]:
    workdir = tmp_path_factory.mktemp("console-demo")
    sup: Supervisor | None = None
    try:
        for attempt in range(3):
            layout = prepare_workspace(workdir, people=120)   # fresh ports each attempt
            sup = Supervisor(layout)
            try:
                sup.start_gateway()
                break
            except Unavailable as exc:
                sup.stop_all()
                if "address already in use" not in str(exc).lower() or attempt == 2:
                    raise
        assert sup is not None
        sup.start_nodes()
        sites = {s.site_id for s in layout.manifest.sites}

        def online() -> bool:
            state = get_json(layout, "/api/consortium", timeout=5)["sites"]  # type: ignore[index]
            return {s["site_id"] for s in state
                    if s["node"] and s["node"]["state"] == "online"} >= sites

        def synced() -> bool:
            body = get_json(layout, "/api/archive/sync", timeout=5)
            rows = {r["site_id"]: r for r in body["sites"]}  # type: ignore[index]
            return set(rows) >= sites and all(
                r["caught_up_at"] and r["behind"] == 0 for r in rows.values())

        _wait("every node online", online, 120)
        _wait("the archive caught up with every site", synced, 180)
        yield DemoConsortium(layout, seed_console_accounts(layout))
    finally:
        if sup is not None:
            sup.stop_all()


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium for one test module. Playwright's sync API keeps an event loop running
    while it is started, so a browser module holds only plain (sync) tests, and the
    browser stops with its module: asyncio tests in other modules then run as usual."""
    executable = _chromium()
    if executable is None:
        message = ("Debian's chromium is not installed (apt-get install chromium); the "
                   "console's browser tests need it")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
async def http(gateway) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the in-process test gateway's HTTP port (pages over plain HTTP)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}",
                                 timeout=30) as client:
        yield client


@pytest.fixture
def signed_in(browser, demo_consortium: DemoConsortium) -> Iterator[Callable[..., object]]:
    """``signed_in(account, lang="zh")`` → a Playwright page of that person, signed in
    through the sign-in form, at their home page."""
    contexts = []

    def open_page(account: ConsoleAccount, lang: str = "zh"):  # noqa: ANN202
        context = browser.new_context(viewport=VIEWPORT,
                                      locale="en-US" if lang == "en" else "zh-CN")
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{demo_consortium.url}/console/signin?lang={lang}")
        page.select_option("#site", account.signin_site)
        page.fill("#username", account.user)
        page.fill("#password", account.password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        assert "/console/signin" not in page.url, page.content()[:2000]
        return page

    yield open_page
    for context in contexts:
        context.close()


def screenshot(page, name: str) -> Path:  # noqa: ANN001
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


__all__ = ["CONSOLE_ACCOUNTS", "DemoConsortium", "screenshot"]
