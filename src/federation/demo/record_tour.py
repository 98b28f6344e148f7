"""The demo's second tour: one person's record across sites, from every kind of source.

After the nodes' change feeds have reached the gateway's archive, the tour picks the
person (by the ground truth) whose records come from the most kinds of source — a
township spreadsheet export, a HIS database, the county LIS's HL7 v2 feed, the city
PACS study list — and reads what each site holds of them through the gateway
(``Gateway.ReadPatientRecord``, operator certificate, logged). It then shows one lab
result that arrived as an HL7 ORU^R01 message, the seed's diagnosis
"左侧中央型肺鳞癌并纵膈淋巴结转移" as the coded Condition the node made of it, and the
data-quality report with the records each site quarantined and why.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from federation.client import GatewayClient
from federation.demo.identity_tour import show_identity
from federation.demo.signin import bearer_headers, get_json
from federation.demo.workspace import DemoLayout
from federation.gateway.quality_view import fetch_quality, print_quality
from federation.nodes.adapters import open_adapter
from federation.nodes.fhir_mapping import stable_id
from federation.nodes.model import LabResultRecord
from federation.security.tls import TlsMaterial
from federation.terminology.systems import extension_url

__all__ = ["SEED_DIAGNOSIS", "run_record_tour"]

SEED_DIAGNOSIS = "左侧中央型肺鳞癌并纵膈淋巴结转移"
SYNC_TIMEOUT_S = 90.0


@dataclass(slots=True)
class _Candidate:
    person_id: str
    records: dict[str, str]                               # site → local patient id
    kinds: set[str] = field(default_factory=set)          # source kinds holding records
    hl7_site: str | None = None
    seed_site: str | None = None

    def rank(self) -> tuple[int, int, int, str]:
        return (-len(self.kinds), self.hl7_site is None, self.seed_site is None,
                self.person_id)


def _candidates(layout: DemoLayout, by_person: dict[str, list[tuple[str, str]]]
                ) -> list[_Candidate]:
    """Every person with the source kinds their records come from (ground truth); the
    sources' quarantine warnings are the nodes' to log, not the narrator's."""
    quiet = logging.getLogger("federation.node.adapter")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        return _rank_people(layout, by_person)
    finally:
        quiet.setLevel(level)


def _rank_people(layout: DemoLayout, by_person: dict[str, list[tuple[str, str]]]
                 ) -> list[_Candidate]:
    people = [_Candidate(p, dict(recs)) for p, recs in by_person.items()]
    for spec in layout.manifest.sites:
        sources = [(spec.source_kind, open_adapter(spec.source_kind, spec.source_path,
                                                   spec.mapping))]
        sources += [(e.kind, open_adapter(e.kind, e.path)) for e in spec.extra_sources]
        try:
            for person in people:
                local = person.records.get(spec.site_id)
                if local is None:
                    continue
                for kind, adapter in sources:
                    clinical = adapter.clinical(local)
                    if adapter.get_patient(local) is None and not clinical:
                        continue
                    person.kinds.add(kind)
                    if kind == "hl7" and any(isinstance(r, LabResultRecord) for r in clinical):
                        person.hl7_site = spec.site_id
                    if any(v.diagnosis_text == SEED_DIAGNOSIS for v in adapter.encounters(local)):
                        person.seed_site = spec.site_id
        finally:
            for _, adapter in sources:
                adapter.close()
    return sorted(people, key=_Candidate.rank)


def _wait_for_sync(layout: DemoLayout, console: Console) -> bool:
    """Until the archive holds every online site's feed up to its head."""
    sites = {s.site_id for s in layout.manifest.sites}
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        sync: Any = get_json(layout, "/api/archive/sync", timeout=5)
        status = {s["site_id"]: s for s in sync["sites"]}
        if set(status) >= sites and all(
                s["caught_up_at"] and s["behind"] == 0 for s in status.values()):
            total = sum(sum(s["resources"].values()) for s in status.values())
            console.print(f"The archive holds {total} resources pulled from {len(status)} "
                          "sites' change feeds (full history; increments follow).")
            return True
        time.sleep(0.5)
    behind = sorted(sites - {k for k, s in status.items() if s["caught_up_at"]})
    console.print(f"[red]the archive did not catch up within {SYNC_TIMEOUT_S:.0f} s: "
                  f"{', '.join(behind)}[/]")
    return False


async def run_record_tour(layout: DemoLayout, by_person: dict[str, list[tuple[str, str]]],
                          console: Console) -> bool:
    """True when one person's record showed every source kind, an HL7 lab result and
    the seed diagnosis normalised, and the quality report listed quarantined records."""
    console.rule("[bold]Tour: one person's record, from every kind of source")
    if not _wait_for_sync(layout, console):
        return False
    ranked = _candidates(layout, by_person)
    person = ranked[0]
    wanted_kinds = {s.source_kind for s in layout.manifest.sites} | {
        e.kind for s in layout.manifest.sites for e in s.extra_sources}
    console.print(f"{person.person_id} has records at {', '.join(sorted(person.records))}, "
                  f"from {', '.join(sorted(person.kinds))} sources.")
    tls = TlsMaterial.load(layout.operator_cert, layout.operator_key, layout.ca_cert)
    shown: dict[str, list[dict[str, Any]]] = {}
    async with GatewayClient(layout.grpc_address, tls) as client:
        table = Table(show_header=True, header_style="bold")
        for col in ("site", "source kinds", "resources read through the gateway"):
            table.add_column(col)
        for site_id, local in sorted(person.records.items()):
            pid = stable_id(site_id, "Patient", local)
            record = await client.read_patient_record(site_id, pid)
            shown[site_id] = [json.loads(e.json) for e in record]
            counts = Counter(e.resource_type for e in record)
            spec = layout.manifest.site(site_id)
            kinds = [spec.source_kind] + [e.kind for e in spec.extra_sources]
            table.add_row(site_id, ", ".join(kinds),
                          ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
        console.print(table)
        ok = show_identity(layout, person.person_id, person.records, console)
        for kind in sorted(wanted_kinds - person.kinds):  # a small consortium may lack one
            ok &= await _show_kind_elsewhere(client, layout, ranked, kind, console)
        ok &= _show_hl7_lab(person, shown, console)
        seed = shown.get(person.seed_site or "", [])
        if not any(_is_seed(r) for r in seed):
            holder = next((c for c in ranked if c.seed_site), None)
            if holder is not None:
                console.print(f"\n{person.person_id} never had the seed diagnosis; "
                              f"{holder.person_id} did, at {holder.seed_site}:")
                local = holder.records[holder.seed_site or ""]
                record = await client.read_patient_record(
                    holder.seed_site or "", stable_id(holder.seed_site or "", "Patient", local))
                seed = [json.loads(e.json) for e in record]
        ok &= _show_seed(seed, console)
    ok &= _show_quality(layout, console)
    return ok


#: what each kind of extra source contributes, to show when the chosen person lacks it
_KIND_TYPES = {"pacs": "ImagingStudy", "hl7": "Observation"}


async def _show_kind_elsewhere(client: GatewayClient, layout: DemoLayout,
                               ranked: list[_Candidate], kind: str, console: Console) -> bool:
    holder = next((c for c in ranked if kind in c.kinds), None)
    rtype = _KIND_TYPES.get(kind)
    if holder is None or rtype is None:
        console.print(f"[red]no one's record comes from a {kind} source[/]")
        return False
    site = next(s.site_id for s in layout.manifest.sites if s.site_id in holder.records and (
        kind == s.source_kind or kind in {e.kind for e in s.extra_sources}))
    local = holder.records[site]
    record = [json.loads(e.json) for e in await client.read_patient_record(
        site, stable_id(site, "Patient", local))]
    found = [r for r in record if r["resourceType"] == rtype]
    detail = found[0].get("description", "") if found else ""
    console.print(f"{holder.person_id}'s record at {site} adds the {kind} source: "
                  f"{len(found)} {rtype} ({detail})")
    return bool(found)


def _show_hl7_lab(person: _Candidate, shown: dict[str, list[dict[str, Any]]],
                  console: Console) -> bool:
    labs = [r for r in shown.get(person.hl7_site or "", [])
            if r["resourceType"] == "Observation"
            and r["category"][0]["coding"][0]["code"] == "laboratory"]
    if not labs:
        console.print("[red]no laboratory result from an HL7 v2 feed came back[/]")
        return False
    lab = next((r for r in labs if "valueQuantity" in r), labs[0])
    codes = ", ".join(f"{c.get('code')} ({c['system'].rsplit('/', 1)[-1]})"
                      for c in lab["code"].get("coding", []))
    value = lab.get("valueQuantity") or {}
    shown_value = (f"{value.get('comparator', '')}{value.get('value')} {value.get('unit', '')}"
                   if value else lab.get("valueString", ""))
    ranges = lab.get("referenceRange", [{}])[0]
    flag = (lab.get("interpretation") or [{"coding": [{}]}])[0]["coding"][0].get("display", "")
    console.print(
        f"\nA lab result from {person.hl7_site}'s LIS, which arrived as an HL7 v2 ORU^R01 "
        f"message and left the node as FHIR Observation/{lab['id'][:8]}…:\n"
        f"   {lab['code']['text']}: {shown_value}  codes {codes}\n"
        f"   reference {ranges.get('low', {}).get('value', '')}–"
        f"{ranges.get('high', {}).get('value', '')}  {flag}  at {lab['effectiveDateTime']}")
    return True


def _is_seed(resource: dict[str, Any]) -> bool:
    return (resource["resourceType"] == "Condition"
            and resource.get("code", {}).get("text") == SEED_DIAGNOSIS)


def _show_seed(record: list[dict[str, Any]], console: Console) -> bool:
    condition = next((r for r in record if _is_seed(r)), None)
    if condition is None:
        console.print("[red]no site holds the seed diagnosis[/]")
        return False
    ext = {e["url"].rsplit("/", 1)[-1]: e for e in condition.get("extension", [])}
    codings = condition["code"].get("coding", [])
    icd = next((c for c in codings if "icd-10" in c["system"]), {})
    body = (condition.get("bodySite") or [{}])[0]
    laterality = next((e["valueCodeableConcept"]["coding"][0]["display"]
                       for e in body.get("extension", [])
                       if e["url"] == extension_url("laterality")), "—")

    def concept(name: str) -> str:
        values = [e for e in condition.get("extension", []) if e["url"] == extension_url(name)]
        texts = []
        for e in values:
            c = e["valueCodeableConcept"]
            texts.append(c.get("text") or c["coding"][0].get("display") or c["coding"][0]["code"])
        return ", ".join(texts) or "—"

    console.print(
        f"\nThe seed diagnosis, as the node coded it (Condition/{condition['id'][:8]}…):\n"
        f"   text        {condition['code']['text']}\n"
        f"   disease     ICD-10 {icd.get('code', '—')} {icd.get('display') or ''}\n"
        f"   site        {body.get('text', '—')} (laterality {laterality})\n"
        f"   site type   {concept('site-type')}\n"
        f"   pathology   {concept('morphology')}\n"
        f"   metastasis  {concept('metastasis-site')}\n"
        f"   status      {ext.get('normalisation-status', {}).get('valueCoding', {}).get('code')}")
    return bool(icd) and "morphology" in ext and "metastasis-site" in ext


def _show_quality(layout: DemoLayout, console: Console) -> bool:
    console.rule("[bold]Data quality: what each site's node quarantined, and why")
    token = bearer_headers(layout)["Authorization"].removeprefix("Bearer ")
    report = fetch_quality(layout.http_url, token=token)
    print_quality(report, show=5, console=console)
    return any(site["quarantined_total"] for site in report["sites"])
