"""``federation consult …``: remote consultation on the command line.

Requesters: ``request | status | ack``. Specialists: ``inbox | claim | decline | hand-over
| schedule | start | end | fetch-study | report | amend``. Anyone: ``verify`` (offline:
checks a delivered report's signature against the consortium CA certificate).

Staff sign in with their person certificate folder (``federation ca issue --person``);
a report is signed here, with that certificate's key, before it leaves the machine.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from federation._cli_util import friendly, local_time, person_credentials
from federation.consult.client import ConsultClient
from federation.consult.report import verify_bundle
from federation.consult.service import MODES, NewConsult
from federation.consult.wire import ConsultSummary
from federation.errors import InvalidInput

__all__ = ["consult"]

_STYLE = {"requested": "yellow", "accepted": "cyan", "in-progress": "blue",
          "completed": "green", "cancelled": "dim"}
_DONE = {"claim": "claimed", "decline": "declined", "hand-over": "handed over",
         "schedule": "scheduled", "start": "started", "end": "ended", "ack": "acknowledged",
         "cancel": "cancelled"}
KINDS = ("imaging", "ecg", "pathology", "ultrasound", "case-discussion")


def _out() -> Console:
    return Console()


def _connected(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Add --gateway and --credentials; run ``fn(client, **options)`` in a client."""

    @click.option("--gateway", "address", default="127.0.0.1:50051", show_default=True,
                  help="The gateway's gRPC address.")
    @click.option("--credentials", "creds", type=click.Path(path_type=Path, file_okay=False,
                                                            exists=True), required=True,
                  help="Your certificate folder (from `federation ca issue --person`).")
    @friendly
    @functools.wraps(fn)
    def command(address: str, creds: Path, **options: Any) -> None:
        async def run() -> None:
            async with ConsultClient(address, person_credentials(creds)) as client:
                await fn(client, **options)

        asyncio.run(run())

    return command


def _state(c: ConsultSummary) -> str:
    label = f"{c.status} · {c.business_status}"
    return f"[{_STYLE.get(c.status, 'white')}]{label}[/]"


def _done(c: ConsultSummary, verb: str) -> None:
    who = f", with {c.assignee}" if c.assignee else ""
    _out().print(f"consult [bold]{c.id}[/] {verb}: now {_state(c)}{who} (version {c.version})")


@click.group()
def consult() -> None:
    """Remote consultation (远程会诊): ask a specialist pool at a hub site to read an
    ECG, an imaging study, pathology slides or ultrasound, or to discuss a case.

    \b
    Every command but verify needs --credentials DIR and --gateway HOST:PORT. A day:
      federation consult request P123 --kind ecg --question "胸痛2小时" \\
          --study ECG-001 --urgency urgent --consent written
      federation consult inbox                       (a specialist: my pools' requests)
      federation consult claim CON
      federation consult fetch-study CON ECG-001 --out ./studies
      federation consult report CON --conclusion "急性下壁心肌梗死" --code 164865005
      federation consult ack CON                     (the requester: closes the case)
      federation consult verify delivered-report.json --ca ca.crt
    """


@consult.command("request")
@click.argument("patient_id")
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--question", required=True, help="What you ask the specialist.")
@click.option("--mode", type=click.Choice(MODES), default="offline", show_default=True,
              help="offline: store-and-forward; interactive: a session in a pool slot.")
@click.option("--urgency", type=click.Choice(["routine", "urgent", "emergency"]),
              default="routine", show_default=True)
@click.option("--pool", help="A specialist pool (default: the first taking this kind).")
@click.option("--study", "studies", multiple=True, help="A study kept at your site (repeatable).")
@click.option("--reason-code", help="ICD-10 code of the problem.")
@click.option("--reason", "reason_text", help="The problem in words.")
@click.option("--consent", type=click.Choice(["written", "verbal", "electronic"]),
              help="How the patient consented to sharing their record (required).")
@click.option("--request-id", help="Your own id for this request; repeating it is harmless.")
@_connected
async def request_cmd(client: ConsultClient, patient_id: str, kind: str, question: str,
                      mode: str, urgency: str, pool: str | None, studies: tuple[str, ...],
                      reason_code: str | None, reason_text: str | None, consent: str | None,
                      request_id: str | None) -> None:
    """Ask for a consult about PATIENT_ID (the patient's FHIR id at your site)."""
    reason = {"system": "http://hl7.org/fhir/sid/icd-10", "code": reason_code or "",
              "text": reason_text or ""} if reason_code or reason_text else {}
    c, created = await client.request(NewConsult(
        patient_id=patient_id, kind=kind, question=question, mode=mode, urgency=urgency,
        pool=pool, reason=reason, study_ids=studies, consent_method=consent,
        request_id=request_id))
    _done(c, f"{'sent' if created else 'was already sent'} to pool {c.pool} at {c.hub_site}")


@consult.command("inbox")
@click.option("--mine", is_flag=True, help="Only consults you hold.")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["requested", "accepted", "in-progress", "completed",
                                 "cancelled"]))
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@_connected
async def inbox_cmd(client: ConsultClient, mine: bool, statuses: tuple[str, ...],
                    limit: int) -> None:
    """Your pools' consults (a specialist) or your site's (a requester)."""
    rows, total = await client.inbox(status=statuses, mine=mine, limit=limit)
    table = Table(title=f"Consults ({total})", header_style="bold")
    for column in ("id", "kind", "mode", "urgency", "from", "pool", "state", "with"):
        table.add_column(column, no_wrap=column == "id")
    for c in rows:
        flag = " [red]⚑ escalated[/]" if c.escalated else ""
        table.add_row(c.id, c.kind, c.mode, c.urgency, c.requester_site, c.pool,
                      _state(c) + flag, c.assignee or "—")
    _out().print(table)


def _move(name: str, help_text: str, *extra: Callable[..., Any]) -> None:
    def body(client: ConsultClient, consult_id: str, note: str, **kw: Any) -> Awaitable[None]:
        async def run() -> None:
            slot = local_time(kw.pop("slot", None), "--slot")
            participants = kw.pop("participants", ())
            c = await client.act(consult_id, name, note=note, slot_start=slot,
                                 participants=participants, **kw)
            _done(c, _DONE[name])
        return run()

    command: Callable[..., Any] = _connected(body)
    for option in extra:
        command = option(command)
    command = click.option("--note", default="", help="A note for the history.")(command)
    command = click.argument("consult_id")(command)
    consult.command(name, help=help_text)(command)


_move("claim", "Take a consult from your pool (one specialist wins a race).")
_move("decline", "Pass on a pool's consult, or give back one you hold.")
_move("hand-over", "Hand a consult you hold to another member of the pool.",
      click.option("--to", "to_user", required=True, help="The member's user id."))
_move("schedule", "Book an interactive session in one of the pool's slots.",
      click.option("--slot", required=True, help="The slot's start, e.g. 2026-12-01T09:30."),
      click.option("--with", "participants", multiple=True,
                   help="Another pool member to invite (case discussion; repeatable)."))
_move("start", "Record that the interactive session started.")
_move("end", "Record that the interactive session ended.")
_move("ack", "Acknowledge the report (the requester): this closes the case.")
_move("cancel", "Withdraw a request (the requester).")


@consult.command("status")
@click.argument("consult_id")
@click.option("--json", "as_json", is_flag=True, help="The resources as JSON.")
@_connected
async def status_cmd(client: ConsultClient, consult_id: str, as_json: bool) -> None:
    """One consult: its state, studies, reports and history."""
    d = await client.get(consult_id)
    if as_json:
        click.echo(json.dumps(d.resources, ensure_ascii=False, indent=2))
        return
    c, out = d.consult, _out()
    out.print(f"[bold]{c.id}[/] {c.kind} ({c.mode}, {c.urgency}) from {c.requester_site} to "
              f"pool {c.pool} at {c.hub_site}: {_state(c)}"
              + (f", with {c.assignee}" if c.assignee else ""))
    for m in d.studies:
        out.print(f"  study {m.study_id} ({m.kind}): " + ", ".join(
            f"{o.name} {o.size} B sha256 {o.sha256[:12]}…" for o in m.objects))
    for name in sorted(k for k in d.resources if k.startswith("Report.v")):
        r = d.resources[name]
        tags = [t["code"] for t in r.get("meta", {}).get("tag", [])]
        out.print(f"  {name}: {r['status']}{' (superseded)' if 'superseded' in tags else ''}"
                  f" — {r.get('conclusion', '')}")
    table = Table(title="History", header_style="bold")
    for column in ("v", "at", "action", "by", "to"):
        table.add_column(column)
    for h in d.history:
        table.add_row(str(h["version"]), h["at"][:19], h["action"], h["actor"], h["to"])
    out.print(table)
    out.print("allowed now: " + (", ".join(d.allowed) or "nothing"))


@consult.command("fetch-study")
@click.argument("consult_id")
@click.argument("study_id")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("."), show_default=True, help="Where to write <study>/<object>.")
@click.option("--object", "objects", multiple=True, help="Only this object (repeatable).")
@_connected
async def fetch_cmd(client: ConsultClient, consult_id: str, study_id: str, out_dir: Path,
                    objects: tuple[str, ...]) -> None:
    """Stream a study from its origin site, checking every chunk's SHA-256; run it again
    after a broken connection to resume from the last good chunk."""
    for d in await client.fetch_study(consult_id, study_id, out_dir, objects=objects):
        resumed = f" (resumed at {d.resumed_from} B)" if d.resumed_from else ""
        _out().print(f"{d.path}: {d.size} bytes, SHA-256 verified{resumed}")


def _codes(codes: tuple[str, ...]) -> list[dict[str, str]]:
    out = []
    for code in codes:
        system, sep, value = code.rpartition("|")
        out.append({"system": system if sep else "http://snomed.info/sct", "code": value})
    return out


@consult.command("report")
@click.argument("consult_id")
@click.option("--conclusion", required=True, help="The report's conclusion text.")
@click.option("--code", "codes", multiple=True,
              help="A coded conclusion: SNOMED CT code, or SYSTEM|CODE (repeatable).")
@_connected
async def report_cmd(client: ConsultClient, consult_id: str, conclusion: str,
                     codes: tuple[str, ...]) -> None:
    """Sign the report with your certificate's key and send it to the requester."""
    _done(await client.report(consult_id, conclusion, _codes(codes)), "reported (signed)")


@consult.command("amend")
@click.argument("consult_id")
@click.option("--conclusion", required=True, help="The amended conclusion text.")
@click.option("--code", "codes", multiple=True, help="A coded conclusion (repeatable).")
@_connected
async def amend_cmd(client: ConsultClient, consult_id: str, conclusion: str,
                    codes: tuple[str, ...]) -> None:
    """Sign and send a new version of your report; the earlier one is kept, marked."""
    _done(await client.report(consult_id, conclusion, _codes(codes), amend=True),
          "amended (signed)")


@consult.command("verify")
@click.argument("report_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--ca", "ca_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              required=True, help="The consortium CA certificate (ca.crt).")
@friendly
def verify_cmd(report_file: Path, ca_file: Path) -> None:
    """Check the signature of every DiagnosticReport in REPORT_FILE (a delivered Bundle,
    or a report and its Provenance) against the consortium CA. Exit 0 when all verify."""
    try:
        data = json.loads(report_file.read_text(encoding="utf-8"))
    except ValueError:
        raise InvalidInput(f"{report_file} is not JSON") from None
    for report_id, signer in verify_bundle(data, ca_file.read_bytes()):
        click.echo(f"DiagnosticReport/{report_id}: signature valid — signed by {signer.name} "
                   f"({', '.join(signer.staff_roles)}) at {signer.site_id}, certificate "
                   f"{signer.serial}")
