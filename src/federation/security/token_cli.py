"""``federation token …``: a site signs in one of its staff on the gateway's HTTP API;
``federation account …``: the consortium accounts the gateway keeps.

Registered by the main CLI with ``cli.add_command(token)`` and ``(account)``. A site's own login system
would call the same two steps (:mod:`federation.security.tokens`); this command is for
tools, scripts and the demo.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click

from federation._cli_util import friendly
from federation.errors import AuthenticationError, InvalidInput, Unavailable
from federation.security.tokens import (
    CONSORTIUM_ROLES,
    JWT_BEARER_GRANT,
    PURPOSES,
    SITE_ROLES,
    STAFF_ROLES,
    sign_staff_assertion,
)

__all__ = ["account", "read_token", "token"]


def read_token(stream: Any) -> str:
    """The access token from a file: the bare token, or the JSON `token get` prints."""
    text = stream.read().strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["access_token"])
        except (ValueError, KeyError):
            raise InvalidInput("the token file is JSON without an access_token") from None
    if not text:
        raise InvalidInput("the token file is empty; get a token with `federation token get`")
    return text


@click.group()
def token() -> None:
    """Sign-in tokens for people at a site (their site vouches for them)."""


def _pem(folder: Path) -> tuple[bytes, bytes]:
    name = folder.name
    try:
        return (folder / f"{name}.key").read_bytes(), (folder / f"{name}.crt").read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the node certificate in {folder}: {exc.strerror}; "
                           f"pass the folder `federation ca issue --site … --out` wrote"
                           ) from None


@token.command("get")
@click.option("--node-cert", "folder", type=click.Path(path_type=Path, file_okay=False),
              required=True, help="The site's node certificate folder (…/county-a).")
@click.option("--user", required=True, help="The person's id in the site's own system.")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(STAFF_ROLES), help="Staff role (repeat for several).")
@click.option("--scope", "scopes", multiple=True, default=("user/*.read",),
              show_default=True, help="SMART scope, e.g. user/ServiceRequest.write.")
@click.option("--purpose", type=click.Choice(sorted(PURPOSES)), default="TREAT",
              show_default=True, help="Purpose of use (HL7 v3 ActReason).")
@click.option("--reason", default=None, help="Why (required for break-glass ETREAT).")
@click.option("--gateway-url", default="http://127.0.0.1:8080", show_default=True)
@click.option("--assertion-only", is_flag=True,
              help="Print the signed staff assertion instead of exchanging it.")
@friendly
def get(folder: Path, user: str, roles: tuple[str, ...], scopes: tuple[str, ...],
        purpose: str, reason: str | None, gateway_url: str, assertion_only: bool) -> None:
    """Print an access token for USER (JSON: access_token, expires_in, scope)."""
    key, cert = _pem(folder)
    assertion = sign_staff_assertion(key, cert, user_id=user, roles=roles, scopes=scopes,
                                     purpose=purpose, reason=reason)
    if assertion_only:
        click.echo(assertion)
        return
    form = urllib.parse.urlencode({"grant_type": JWT_BEARER_GRANT, "assertion": assertion})
    request = urllib.request.Request(
        f"{gateway_url.rstrip('/')}/auth/token", data=form.encode(), method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        refused = json.loads(exc.read() or b"{}")
        raise AuthenticationError(f"the gateway refused the sign-in: "
                                  f"{refused.get('error_description') or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"cannot reach the gateway at {gateway_url}: {exc}") from None
    click.echo(json.dumps(body, indent=2))


@click.group()
def account() -> None:
    """Accounts the gateway keeps: consortium accounts (regional administrators,
    auditors) and the web console accounts of site staff (``--site``)."""


_CONFIG = click.option("--config", type=click.Path(path_type=Path, dir_okay=False),
                       default=None, help="The gateway's TOML configuration.")


@account.command("add")
@click.argument("user")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(STAFF_ROLES),
              help="regional-admin and/or auditor; with --site: doctor, specialist, nurse, "
                   "site-admin.")
@click.option("--site", default=None,
              help="The member site whose staff member USER is (a console account); "
                   "omit for a consortium account.")
@click.password_option("--password", help="At least 12 characters (asked when omitted).")
@_CONFIG
@friendly
def account_add(user: str, roles: tuple[str, ...], site: str | None, password: str,
                config: Path | None) -> None:
    """Create USER, or give USER new roles, site and password."""
    import datetime as dt

    from federation.cli import _open_store
    from federation.security.accounts import hash_password
    from federation.security.identity import validate_name

    validate_name(user, "user name")
    allowed = SITE_ROLES if site else CONSORTIUM_ROLES
    if not set(roles) <= set(allowed):
        raise click.BadParameter(
            f"{'a site staff account' if site else 'a consortium account'} holds "
            f"{', '.join(allowed)} only", param_hint="--role")
    row = _open_store(config).put_account(user, roles, hash_password(password),
                                          dt.datetime.now(dt.UTC), site_id=site)
    click.echo(f"account {row.user_id}: {' '.join(sorted(row.roles))}"
               + (f" at {row.site_id}" if row.site_id else " (consortium)"))


@account.command("list")
@_CONFIG
@friendly
def account_list(config: Path | None) -> None:
    """The accounts, their roles, and whether they are disabled."""
    from federation.cli import _open_store

    for row in _open_store(config).list_accounts():
        state = "disabled" if row.disabled else "active"
        click.echo(f"{row.user_id:<24} {row.site_id or 'consortium':<16} "
                   f"{' '.join(sorted(row.roles)):<28} {state}")


@account.command("disable")
@click.argument("user")
@_CONFIG
@friendly
def account_disable(user: str, config: Path | None) -> None:
    """USER can no longer sign in (tokens already issued expire within 15 minutes)."""
    from federation.cli import _open_store

    _open_store(config).disable_account(user)
    click.echo(f"account {user} disabled")
