"""Tour step: the master patient index's view of one person, with its reasons."""

from __future__ import annotations

import urllib.error
from typing import Any

from rich.console import Console
from rich.table import Table

from federation.demo.signin import get_json
from federation.demo.workspace import DemoLayout
from federation.nodes.fhir_mapping import stable_id

__all__ = ["show_identity"]


def show_identity(layout: DemoLayout, person_id: str, records: dict[str, str],
                  console: Console) -> bool:
    """True when the EMPI put the person's records from several sites under one person
    and can say why. ``records`` is site → the site's own patient number (ground truth)."""
    console.rule("[bold]Tour: who is who — the master patient index")
    site, local = sorted(records.items())[0]
    record_id = stable_id(site, "Patient", local)
    try:
        # a doctor at that site, signed in for treatment, asks who this patient is
        view: Any = get_json(layout, f"/api/identity/records/{site}/{record_id}/person",
                             site=site, role="doctor", purpose="TREAT")
    except urllib.error.HTTPError as exc:
        console.print(f"[red]the EMPI has no person for {site}/{record_id}: HTTP {exc.code}[/]")
        return False
    linked = {r["site_id"]: r for r in view["records"] if r["state"] == "linked"}
    table = Table(show_header=True, header_style="bold")
    for col in ("site", "site's patient number", "EMPI record id", "ground truth"):
        table.add_column(col)
    for site_id, r in sorted(linked.items()):
        truth = "same person" if records.get(site_id) == r["local_id"] else "[red]other[/]"
        table.add_row(site_id, r["local_id"] or "", r["record_id"][:13] + "…", truth)
    console.print(f"Person [bold]{view['person_id']}[/] (ground truth {person_id}) holds "
                  f"{len(linked)} site records:")
    console.print(table)
    for event in view["history"]:
        if event["action"] != "auto-link":
            continue
        detail = event["detail"]
        console.print(f"  {event['record'].split('/')[0]} joined because it matched "
                      f"{detail['matched'].split('/')[0]} with weight {event['weight']:+.1f} "
                      f"bits:")
        parts = [f"{c['field']} {c['meaning']} ({c['bits']:+.1f})"
                 for c in detail["contributions"]]
        console.print("    " + "; ".join(parts))
    missing = sorted(set(records) - set(linked))
    if missing:
        console.print(f"  [yellow]not (yet) linked to this person: {', '.join(missing)}[/]")
    return len(linked) >= 2 and all(records.get(s) == r["local_id"] for s, r in linked.items())
