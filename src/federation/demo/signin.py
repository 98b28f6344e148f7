"""The demo signs in like a site would: a node certificate vouches for a staff member,
the gateway's ``/auth/token`` answers an access token (kept until shortly before it
expires, then fetched again)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

from federation.demo.workspace import DemoLayout
from federation.security.tokens import JWT_BEARER_GRANT, sign_staff_assertion

__all__ = ["bearer_headers", "get_json", "sign_in"]

_cache: dict[tuple[str, str, str, str], tuple[str, float]] = {}


def bearer_headers(layout: DemoLayout, *, site: str = "city-1", role: str = "site-admin",
                   purpose: str = "HOPERAT", user: str = "demo") -> dict[str, str]:
    key = (layout.http_url, site, role, purpose)
    token, until = _cache.get(key, ("", 0.0))
    if time.monotonic() >= until:
        folder = layout.workdir / "pki" / site
        assertion = sign_staff_assertion(
            (folder / f"{site}.key").read_bytes(), (folder / f"{site}.crt").read_bytes(),
            user_id=f"{user}-{role}", roles=[role], scopes=["user/*.read"], purpose=purpose)
        body = sign_in(layout, {"grant_type": JWT_BEARER_GRANT, "assertion": assertion})
        token, until = body["access_token"], time.monotonic() + body["expires_in"] - 60
        _cache[key] = (token, until)
    return {"Authorization": f"Bearer {token}"}


def sign_in(layout: DemoLayout, form: dict[str, str]) -> dict:
    """POST ``/auth/token`` (an assertion or a password grant); the token response."""
    request = urllib.request.Request(
        layout.http_url + "/auth/token", data=urllib.parse.urlencode(form).encode(),
        method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def get_json(layout: DemoLayout, path: str, *, timeout: float = 10,
             headers: dict[str, str] | None = None, **who: str) -> object:
    """GET ``path`` as the staff member ``who`` describes, or with ``headers`` given."""
    request = urllib.request.Request(layout.http_url + path,
                                     headers=headers or bearer_headers(layout, **who))
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.load(r)
