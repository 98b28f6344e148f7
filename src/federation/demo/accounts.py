"""The demo's web console accounts: one person of each kind the console serves, with a
password printed at start (a demo on loopback; a real consortium creates accounts with
``federation account add USER --site SITE --role doctor``).

The clinicians are the tour's staff (:data:`~federation.demo.workspace.STAFF`), so the
same people hold person certificates: the specialist signs reports in the browser with
the key in ``<workdir>/pki/<user>/``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from federation.demo.workspace import STAFF, DemoLayout
from federation.security.accounts import hash_password
from federation.settings import load_gateway_settings
from federation.store import GatewayStore, make_engine

__all__ = ["ConsoleAccount", "CONSOLE_ACCOUNTS", "seed_console_accounts"]


@dataclass(frozen=True, slots=True)
class ConsoleAccount:
    user: str
    site: str | None            # None: a consortium account
    roles: tuple[str, ...]
    password: str
    what: str                   # who this is, for the printed list

    @property
    def signin_site(self) -> str:
        return self.site or "consortium"


CONSOLE_ACCOUNTS = (
    *(ConsoleAccount(user, site, roles, f"{user}-demo-2026",
                     "county doctor" if "doctor" in roles and site.startswith("county")
                     else "township doctor" if "doctor" in roles
                     else "city specialist")
      for user, (site, roles) in STAFF.items()),
    ConsoleAccount("admin-qian", None, ("regional-admin",), "admin-qian-demo-2026",
                   "regional administrator"),
    ConsoleAccount("auditor-sun", None, ("auditor",), "auditor-sun-demo-2026", "auditor"),
)


def seed_console_accounts(layout: DemoLayout) -> tuple[ConsoleAccount, ...]:
    """Create (or reset) the demo's console accounts in the running gateway's store."""
    url = load_gateway_settings(layout.gateway_config).database_url
    engine = make_engine(url)
    try:
        store = GatewayStore(engine)
        now = dt.datetime.now(dt.UTC)
        for account in CONSOLE_ACCOUNTS:
            store.put_account(account.user, account.roles, hash_password(account.password),
                              now, site_id=account.site)
    finally:
        engine.dispose()
    return CONSOLE_ACCOUNTS
