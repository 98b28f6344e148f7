"""Tour step: one upward and one downward referral, end to end, through the gateway.

A county doctor (person certificate) refers a patient the city also knows up to the
city's cardiology with the patient's consent; the city's specialist books, sees and
completes with a discharge summary, which the county's node receives — that receipt
closes the loop. The specialist then refers the patient back down with a follow-up plan;
the county accepts, records a follow-up visit that flows back to the specialist, and
completes. Each step is printed as the requester would see it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from federation.demo.signin import get_json
from federation.demo.workspace import DemoLayout
from federation.errors import FederationError
from federation.nodes.fhir_mapping import stable_id
from federation.referral.client import ReferralClient
from federation.referral.moves import Details
from federation.referral.service import NewReferral
from federation.referral.wire import ReferralSummary
from federation.security.tls import TlsMaterial

__all__ = ["run_referral_tour"]

UP, DOWN = ("county-a", "city-1")


def _client(layout: DemoLayout, user: str) -> ReferralClient:
    folder = layout.staff[user]
    tls = TlsMaterial.load(folder / f"{user}.crt", folder / f"{user}.key", folder / "ca.crt")
    return ReferralClient(layout.grpc_address, tls)


def _linked(layout: DemoLayout, site: str, record_id: str) -> str | None:
    try:
        view: Any = get_json(layout, f"/api/identity/records/{site}/{record_id}/person",
                             timeout=5, site=site, role="doctor", purpose="TREAT")
        return view.get("person_id")
    except (urllib.error.URLError, OSError, ValueError):
        return None


async def _pick(layout: DemoLayout, by_person: dict[str, list[tuple[str, str]]]
                ) -> tuple[str, str] | None:
    """(county-a record, city-1 record) of one person the EMPI links at both sites."""
    for records in by_person.values():
        local = dict(records)
        if UP not in local or DOWN not in local:
            continue
        county, city = stable_id(UP, "Patient", local[UP]), stable_id(DOWN, "Patient", local[DOWN])
        for _ in range(60):
            a = await asyncio.to_thread(_linked, layout, UP, county)
            b = await asyncio.to_thread(_linked, layout, DOWN, city)
            if a and a == b:
                return county, city
            if a and b:
                break            # linked, but to different persons: try someone else
            await asyncio.sleep(0.5)
    return None


async def _until_closed(client: ReferralClient, ref_id: str, timeout: float = 20.0) -> bool:
    for _ in range(int(timeout / 0.2)):
        detail = await client.get(ref_id)
        if detail.referral.business_status == "closed":
            return True
        await asyncio.sleep(0.2)
    return False


def _line(console: Console, who: str, r: ReferralSummary, what: str) -> None:
    state = r.status if r.status == r.business_status else f"{r.status} · {r.business_status}"
    console.print(f"  [bold]{who}[/] {what} → [cyan]{state}[/] (v{r.version})")


async def _history(console: Console, client: ReferralClient, ref_id: str) -> None:
    detail = await client.get(ref_id)
    table = Table(show_header=True, header_style="bold")
    for col in ("#", "action", "by", "state"):
        table.add_column(col)
    for h in detail.history:
        table.add_row(str(h["version"]), h["action"], h["actor"], h["to"])
    console.print(table)
    got = [f"{d['site']}:{d['purpose']}" for d in detail.deliveries if d["acknowledged"]]
    console.print(f"  stored by the nodes: {', '.join(got)}")


async def run_referral_tour(layout: DemoLayout, by_person: dict[str, list[tuple[str, str]]],
                            console: Console) -> bool:
    """True when both referrals closed their loops."""
    console.rule("[bold]Tour: two-way referral (双向转诊)")
    picked = await _pick(layout, by_person)
    if picked is None:
        console.print("[red]no person is linked at both county-a and city-1[/]")
        return False
    county_record, city_record = picked
    wang, li = _client(layout, "dr-wang"), _client(layout, "dr-li")
    visit = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    try:
        up, _ = await wang.create(NewReferral(
            patient_id=county_record, urgency="urgent", direction="upward", target_site=DOWN,
            department="cardiology", consent_method="written",
            reason={"system": "http://hl7.org/fhir/sid/icd-10", "code": "I21.9",
                    "display": "急性心肌梗死"}, notes="chest pain for 3 hours; ECG ST elevation"))
        console.print(f"\n[bold]Upward[/]: county-a's doctor refers patient {county_record[:10]}… "
                      f"(EMPI person {up.person_id}) to city-1 cardiology, with consent.")
        _line(console, "dr-wang@county-a", up, "creates referral " + up.id)
        r = await li.act(up.id, "accept", Details(appointment_start=visit,
                                                  admission_note="CCU bed 3"))
        _line(console, "dr-li@city-1", r, "accepts and books an appointment")
        _line(console, "dr-li@city-1", await li.act(up.id, "start"), "sees the patient")
        r = await li.act(up.id, "complete", Details(
            result_kind="discharge-summary",
            result_text="STEMI; primary PCI to LAD; discharged day 5 on DAPT."))
        _line(console, "dr-li@city-1", r, "completes with the discharge summary")
        closed_up = await _until_closed(wang, up.id)
        console.print("  county-a's node stored the discharge summary: "
                      + ("[green]loop closed[/]" if closed_up else "[red]not closed[/]"))
        await _history(console, wang, up.id)

        down, _ = await li.create(NewReferral(
            patient_id=city_record, direction="downward", target_site=UP,
            department="rehabilitation", consent_method="verbal", based_on=up.id,
            discharge_summary="PCI day 1; stable; aspirin + clopidogrel 12 months",
            follow_ups=((7, "wound and ECG check"), (30, "lipids and blood pressure"))))
        console.print(f"\n[bold]Downward[/]: city-1's specialist refers the patient back to "
                      f"county-a for rehabilitation (based on {up.id}) with a follow-up plan.")
        _line(console, "dr-li@city-1", down, "creates referral " + down.id)
        _line(console, "dr-wang@county-a",
              await wang.act(down.id, "accept", Details(appointment_start=visit)),
              "accepts")
        _line(console, "dr-wang@county-a", await wang.act(down.id, "follow-up", Details(
            note="day 7: wound clean, ECG normal")), "records a follow-up visit (sent to dr-li)")
        _line(console, "dr-wang@county-a", await wang.act(down.id, "complete", Details(
            result_text="rehabilitation plan completed")), "completes")
        closed_down = await _until_closed(li, down.id)
        console.print("  city-1's node stored the result: "
                      + ("[green]loop closed[/]" if closed_down else "[red]not closed[/]"))
        await _history(console, li, down.id)
    except FederationError as exc:
        console.print(f"[red]referral tour failed: {exc.message}[/]")
        return False
    finally:
        await wang.close()
        await li.close()
    if closed_up and closed_down:
        console.print("\n[green]Both referrals closed their loops: the results are back with "
                      "the requesters.[/]")
    return closed_up and closed_down
