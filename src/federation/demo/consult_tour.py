"""Tour step: one ECG consult and one imaging consult, end to end, through the gateway.

A county doctor (person certificate) asks the city's ECG reading pool to read a 12-lead
ECG kept at the county (offline, store-and-forward), and the city's imaging pool to
discuss a CT series (interactive: a session booked in a pool slot, with its meeting
link). The city's specialist claims each from the pool, streams the study from the
county's node through the gateway (every chunk checked against its SHA-256), and signs the
report with the key of their person certificate; the county's doctor acknowledges it,
which closes the case. The tour verifies each report's signature against the CA.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from rich.console import Console

from federation.consult.client import ConsultClient
from federation.consult.report import verify_bundle
from federation.consult.rules import load_rules
from federation.consult.service import NewConsult
from federation.consult.wire import ConsultSummary
from federation.demo.referral_tour import _linked
from federation.demo.workspace import DemoLayout
from federation.errors import FederationError
from federation.nodes.fhir_mapping import stable_id
from federation.referral.fhir import bundle
from federation.security.tls import TlsMaterial
from federation.synth.studies import write_dicom_study, write_ecg_study

__all__ = ["run_consult_tour"]

ORIGIN = "county-a"


def _client(layout: DemoLayout, user: str) -> ConsultClient:
    folder = layout.staff[user]
    tls = TlsMaterial.load(folder / f"{user}.crt", folder / f"{user}.key", folder / "ca.crt")
    return ConsultClient(layout.grpc_address, tls)


def _line(console: Console, who: str, c: ConsultSummary, what: str) -> None:
    console.print(f"  [bold]{who}[/] {what} → [cyan]{c.status} · {c.business_status}[/] "
                  f"(v{c.version})")


async def _patient(layout: DemoLayout, by_person: dict[str, list[tuple[str, str]]]) -> str | None:
    """A county-a patient the EMPI has linked (consults need the EMPI person)."""
    for records in by_person.values():
        local = dict(records)
        if ORIGIN not in local:
            continue
        record = stable_id(ORIGIN, "Patient", local[ORIGIN])
        for _ in range(20):
            if await asyncio.to_thread(_linked, layout, ORIGIN, record):
                return record
            await asyncio.sleep(0.5)
    return None


async def _consult(console: Console, layout: DemoLayout, wang: ConsultClient,
                   li: ConsultClient, new: NewConsult, conclusion: str,
                   codes: list[dict[str, str]]) -> bool:
    c, _ = await wang.request(new)
    _line(console, "dr-wang@county-a", c, f"asks pool {c.pool} ({new.kind}, {new.mode})")
    _line(console, "dr-li@city-1", await li.act(c.id, "claim"), "claims it from the pool")
    out = layout.workdir / "downloads"
    for study in new.study_ids:
        got = await li.fetch_study(c.id, study, out)
        size = sum(d.size for d in got)
        console.print(f"  [bold]dr-li@city-1[/] streams study {study} from {ORIGIN}: "
                      f"{len(got)} object(s), {size} bytes, every chunk SHA-256 checked")
    if new.mode == "interactive":
        start = _next_slot(c.pool)
        r = await li.act(c.id, "schedule", slot_start=start)
        link = (await li.get(c.id)).resources["Appointment"]["extension"][0]["valueUrl"]
        _line(console, "dr-li@city-1", r, f"books the slot {start:%Y-%m-%d %H:%M}Z ({link})")
        _line(console, "dr-li@city-1", await li.act(c.id, "start"), "opens the session")
        _line(console, "dr-li@city-1", await li.act(c.id, "end"), "closes the session")
    _line(console, "dr-li@city-1", await li.report(c.id, conclusion, codes),
          "signs and sends the report")
    closed = await wang.act(c.id, "ack")
    _line(console, "dr-wang@county-a", closed, "acknowledges the report")
    detail = await wang.get(c.id)
    delivered = bundle("check", [detail.resources["Report.v1"],
                                 detail.resources["Provenance.v1"]], dt.datetime.now(dt.UTC))
    ((report_id, signer),) = verify_bundle(delivered, layout.ca_cert.read_bytes())
    console.print(f"  DiagnosticReport/{report_id}: [green]signature valid[/] — "
                  f"{signer.name} ({', '.join(signer.staff_roles)}) at {signer.site_id}")
    return closed.business_status == "closed"


def _next_slot(pool_id: str) -> dt.datetime:
    return load_rules().pool(pool_id).slots.upcoming(dt.datetime.now(dt.UTC), 1)[0]


async def run_consult_tour(layout: DemoLayout, by_person: dict[str, list[tuple[str, str]]],
                           console: Console) -> bool:
    """True when both consults closed with a verified, signed report."""
    console.rule("[bold]Tour: remote consultation (远程会诊)")
    patient = await _patient(layout, by_person)
    if patient is None:
        console.print(f"[red]no {ORIGIN} patient is linked in the EMPI[/]")
        return False
    studies = Path(layout.workdir) / "studies" / ORIGIN
    ecg = f"ecg-{patient[:8]}"
    ct = f"ct-{patient[:8]}"
    write_ecg_study(studies, ecg, patient)
    write_dicom_study(studies, ct, patient, slices=8, size=128)
    wang, li = _client(layout, "dr-wang"), _client(layout, "dr-li")
    try:
        ok_ecg = await _consult(console, layout, wang, li, NewConsult(
            patient_id=patient, kind="ecg", question="胸痛2小时，请判读12导联心电图",
            urgency="urgent", study_ids=(ecg,), consent_method="written",
            reason={"system": "http://hl7.org/fhir/sid/icd-10", "code": "R07.4",
                    "display": "胸痛"}), "窦性心律，心率72次/分；未见急性ST-T改变",
            [{"system": "http://snomed.info/sct", "code": "64730000",
              "display": "Normal sinus rhythm"}])
        console.print()
        ok_ct = await _consult(console, layout, wang, li, NewConsult(
            patient_id=patient, kind="imaging", mode="interactive", question="肺结节性质？",
            study_ids=(ct,), consent_method="written"),
            "右上肺磨玻璃结节 8 mm，建议3个月后复查低剂量CT",
            [{"system": "http://snomed.info/sct", "code": "427359005",
              "display": "Solitary nodule of lung"}])
    except FederationError as exc:
        console.print(f"[red]consult tour failed: {exc.message}[/]")
        return False
    finally:
        await wang.close()
        await li.close()
    if ok_ecg and ok_ct:
        console.print("\n[green]Both consults closed: signed reports are back with the "
                      "requester.[/]")
    return ok_ecg and ok_ct
