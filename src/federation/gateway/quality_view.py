"""`federation sites quality`: fetch the gateway's quality JSON and print it for people."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from federation.errors import AuthenticationError, NotFound, Unavailable

__all__ = ["fetch_quality", "print_quality"]


def fetch_quality(gateway_url: str, *, token: str, site_id: str | None = None,
                  refresh: bool = False, timeout: float = 120.0) -> dict[str, Any]:
    base = gateway_url.rstrip("/")
    path = (f"/api/consortium/sites/{urllib.parse.quote(site_id)}/quality" if site_id
            else "/api/quality")
    url = base + path + ("?refresh=true" if refresh else "")
    try:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        body = _diagnostics(exc.read())
        if exc.code == 404:
            raise NotFound(body or f"{url}: not found") from None
        if exc.code in (401, 403):
            raise AuthenticationError(f"the gateway refused the token: {body}") from None
        raise Unavailable(f"{url}: HTTP {exc.code} {body}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"cannot reach the gateway at {base}: {exc}") from None


def _diagnostics(body: bytes) -> str:
    try:
        return "; ".join(i.get("diagnostics", "") for i in json.loads(body)["issue"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:200]


def print_quality(report: dict[str, Any], *, show: int = 10, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="Data quality per site")
    for column in ("site", "mapped", "by type", "quarantined", "most frequent reason",
                   "unmapped codes"):
        table.add_column(column)
    for site in report["sites"]:
        reasons = site["quarantined_by_reason"]
        top = next(iter(reasons.items()), None)
        table.add_row(
            site["site_id"], str(site["mapped_total"]),
            ", ".join(f"{t} {n}" for t, n in site["mapped"].items()),
            str(site["quarantined_total"]),
            f"{top[0]} (×{top[1]})" if top else "—",
            str(site.get("unmapped_total", 0)),
        )
    console.print(table)
    for site in report["sites"]:
        if not site["quarantined"]:
            continue
        console.print(f"\n[bold]{site['site_id']}[/]: quarantined records")
        for entry in site["quarantined"][:show]:
            console.print(f"  {entry['kind']:<10} {entry['local_key']:<24} {entry['reason']}")
        if len(site["quarantined"]) > show:
            console.print(f"  … and {len(site['quarantined']) - show} more (--show N, --json)")
    for site in report["sites"]:
        for kind, codes in site.get("unmapped_codes", {}).items():
            listed = ", ".join(f"{code} ×{n}" for code, n in list(codes.items())[:show])
            more = f" … and {len(codes) - show} more" if len(codes) > show else ""
            console.print(f"\n[bold]{site['site_id']}[/]: unmapped {kind}s: {listed}{more}")
    for issue in report["issues"]:
        console.print(f"[yellow]{issue['severity']}[/]: {issue['diagnostics']}")
