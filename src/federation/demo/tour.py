"""The demo's scripted tour: search people at every site through the gateway, then
read one person's record from every kind of source (:mod:`federation.demo.record_tour`).

It picks people the ground truth says are known at several sites, so that between them
every site is visited, takes what one site knows of each (as a doctor at that site
would) and asks the gateway to search every site. What came back is printed per site,
with the ground truth's verdict — noise between sites (homophones, traditional
characters, missing or legacy ID numbers) is why the identity work exists.
ID numbers and phones are masked on screen.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from federation.client import GatewayClient
from federation.demo.audit_tour import run_audit_tour
from federation.demo.consult_tour import run_consult_tour
from federation.demo.record_tour import run_record_tour
from federation.demo.referral_tour import run_referral_tour
from federation.demo.workspace import DemoLayout
from federation.fhir_systems import RESIDENT_ID_SYSTEM, local_patient_id_system
from federation.nodes.adapters import open_sources
from federation.nodes.model import PatientQuery, PatientRecord
from federation.security.tls import TlsMaterial

__all__ = ["run_tour", "pick_tour_people", "mask"]


@dataclass(frozen=True, slots=True)
class TourPerson:
    person_id: str
    home_site: str
    record: PatientRecord
    sites: frozenset[str]


def mask(value: str | None, keep: int = 4) -> str:
    if not value:
        return "—"
    return value[:2] + "*" * max(0, len(value) - 2 - keep) + value[-keep:]


def _truth(layout: DemoLayout) -> tuple[dict[tuple[str, str], str], dict[str, list[tuple[str, str]]]]:
    by_record: dict[tuple[str, str], str] = {}
    by_person: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with layout.manifest.truth_path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            key = (row["site_id"], row["local_patient_id"])
            by_record[key] = row["person_id"]
            by_person[row["person_id"]].append(key)
    return by_record, by_person


def pick_tour_people(layout: DemoLayout, max_people: int = 4) -> list[TourPerson]:
    """Greedy cover: people known at most sites first, until every site is visited."""
    _, by_person = _truth(layout)
    specs = {s.site_id: s for s in layout.manifest.sites}
    ranked = sorted(by_person.items(), key=lambda kv: (-len({s for s, _ in kv[1]}), kv[0]))
    chosen: list[TourPerson] = []
    covered: set[str] = set()
    for person_id, records in ranked:
        sites = frozenset(s for s, _ in records)
        if sites <= covered:
            continue
        home_site, local_id = min(records, key=lambda r: ("city", "county", "township").index(
            specs[r[0]].tier))
        spec = specs[home_site]
        adapter = open_sources(spec.source_settings())
        try:
            record = adapter.get_patient(local_id)
        finally:
            adapter.close()
        if record is None or record.birth_date is None:
            continue
        chosen.append(TourPerson(person_id, home_site, record, sites))
        covered |= sites
        if covered >= set(specs) or len(chosen) >= max_people:
            break
    return chosen


async def run_tour(layout: DemoLayout, console: Console) -> bool:
    """Returns True when patients came back from every site of the consortium."""
    by_record, _ = _truth(layout)
    people = pick_tour_people(layout)
    tls = TlsMaterial.load(layout.operator_cert, layout.operator_key, layout.ca_cert)
    sites_with_hits: set[str] = set()
    console.rule("[bold]Tour: searching every site through the gateway")
    async with GatewayClient(layout.grpc_address, tls) as client:
        for n, person in enumerate(people, 1):
            rec = person.record
            query = PatientQuery(birth_date=rec.birth_date, gender=rec.gender)
            console.print(
                f"\n[bold]{n}. A doctor at {person.home_site} treats {rec.name} "
                f"({rec.gender}, born {rec.birth_date}); ground truth: known at "
                f"{', '.join(sorted(person.sites))}.[/]\n"
                f"   Search all sites for gender={rec.gender}, birthDate={rec.birth_date}:")
            answer = await client.search(query, purpose="TREAT")
            table = Table(show_header=True, header_style="bold")
            for col in ("site", "name", "gender", "birth date", "resident ID", "same person?"):
                table.add_column(col)
            for site in answer.results:
                for env in site.patients:
                    sites_with_hits.add(site.site_id)
                    table.add_row(*_row(site.site_id, json.loads(env.json), by_record, person))
            console.print(table)
            for issue in answer.issues:
                console.print(f"   [yellow]{issue.severity}[/]: {issue.diagnostics}")
    missing = sorted({s.site_id for s in layout.manifest.sites} - sites_with_hits)
    if missing:
        console.print(f"[red]no patients came back from: {', '.join(missing)}[/]")
        return False
    console.print(f"\n[green]Patients came back from all {len(sites_with_hits)} sites.[/] "
                  "Linking them into one person is the master patient index's job.\n")
    _, by_person = _truth(layout)
    if not await run_record_tour(layout, by_person, console):
        return False
    console.print("\n[green]Records from every kind of source came back through the archive.[/]")
    if not await run_referral_tour(layout, by_person, console):
        return False
    if not await run_consult_tour(layout, by_person, console):
        return False
    return await run_audit_tour(layout, console)


def _row(site_id: str, patient: dict, by_record: dict[tuple[str, str], str],
         person: TourPerson) -> tuple[str, ...]:
    ids = {i.get("system"): i.get("value") for i in patient.get("identifier", [])}
    local = ids.get(local_patient_id_system(site_id))
    truth = by_record.get((site_id, local or ""))
    verdict = "[green]yes[/]" if truth == person.person_id else "no"
    name = (patient.get("name") or [{}])[0].get("text", "")
    return (site_id, name, patient.get("gender", ""), patient.get("birthDate", ""),
            mask(ids.get(RESIDENT_ID_SYSTEM)), verdict)
