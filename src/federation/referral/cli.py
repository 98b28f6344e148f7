"""``federation referral …``: two-way referral for doctors, on the command line.

Staff sign in with their person certificate from the consortium CA — the folder
``federation ca issue --person USER --site SITE --staff-role doctor`` wrote — and talk to
the gateway over mutual TLS. Each command is a thin shell over
:class:`~federation.referral.client.ReferralClient`; tables come from ``rich``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from federation._cli_util import friendly, local_time, person_credentials
from federation.errors import ConfigError, InvalidInput
from federation.referral.client import ReferralClient
from federation.referral.fhir import ICD10
from federation.referral.moves import Details
from federation.referral.rules import load_rules
from federation.referral.service import CONSENT_METHODS, NewReferral
from federation.referral.wire import ReferralSummary

__all__ = ["referral"]



def _out() -> Console:
    """A Console per command, sized to the terminal the command runs in."""
    return Console()
_STYLE = {"requested": "yellow", "accepted": "cyan", "in-progress": "blue",
          "completed": "green", "rejected": "red", "cancelled": "dim"}


def _reasons_help() -> str:
    try:
        return ", ".join(load_rules().reject_reasons)
    except ConfigError:
        return "see the consortium's rules"


_credentials = person_credentials


def _connected(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Add --gateway and --credentials; run ``fn(client, **options)`` in a client."""

    @click.option("--gateway", "address", default="127.0.0.1:50051", show_default=True,
                  help="The gateway's gRPC address.")
    @click.option("--credentials", "creds", type=click.Path(path_type=Path, file_okay=False,
                                                            exists=True),
                  required=True,
                  help="Your certificate folder (from `federation ca issue --person`).")
    @friendly
    @functools.wraps(fn)
    def command(address: str, creds: Path, **options: Any) -> None:
        async def run() -> None:
            async with ReferralClient(address, _credentials(creds)) as client:
                await fn(client, **options)

        asyncio.run(run())

    return command


_when = local_time


def _time(value: dt.datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "—"


def _state(r: ReferralSummary) -> str:
    label = r.status if r.business_status == r.status else f"{r.status} · {r.business_status}"
    return f"[{_STYLE.get(r.status, 'white')}]{label}[/]"


def _done(r: ReferralSummary, verb: str) -> None:
    _out().print(f"referral [bold]{r.id}[/] {verb}: now {_state(r)} (version {r.version})")


@click.group()
def referral() -> None:
    """Two-way referral (双向转诊): send patients up to the county or city, down for
    recovery and follow-up, and follow every referral until its result is back.

    \b
    Every command needs your certificate folder (--credentials DIR, from `federation ca
    issue --person`) and the gateway's address (--gateway HOST:PORT). Typical day:
      federation referral create P123 --to city-1 --department cardiology \\
          --urgency urgent --reason-code I21.9 --reason "急性心肌梗死" --consent written
      federation referral list --status requested
      federation referral accept REF --appointment "2026-12-01 09:30"
      federation referral start REF
      federation referral complete REF --result "PCI to LAD; discharged day 5"
    """


@referral.command("create")
@click.argument("patient_id")
@click.option("--to", "target", help="Target site (default: the first the consortium's "
              "rules allow, e.g. a township's county).")
@click.option("--department", help="Target department, e.g. cardiology.")
@click.option("--urgency", type=click.Choice(["routine", "urgent", "emergency"]),
              default="routine", show_default=True,
              help="Emergencies may go straight to the city.")
@click.option("--direction", type=click.Choice(["upward", "downward"]), default="upward",
              show_default=True)
@click.option("--reason-code", help="Diagnosis code (ICD-10 unless --reason-system).")
@click.option("--reason-system", default=ICD10, show_default=True)
@click.option("--reason", "reason_text", help="The reason in words (e.g. 急性心肌梗死).")
@click.option("--notes", default="", help="Anything the receiving clinician should know.")
@click.option("--consent", type=click.Choice(CONSENT_METHODS),
              help="How the patient consented to sharing their record (required).")
@click.option("--based-on", help="Downward: the upward referral this one follows.")
@click.option("--discharge-summary", default="", help="Downward: the discharge summary text.")
@click.option("--follow-up", "follow_ups", multiple=True, metavar="DAYS:WHAT",
              help="Downward: a scheduled follow-up visit, e.g. '7:wound check' (repeatable).")
@click.option("--request-id", help="Your own id for this request; repeating it is harmless.")
@_connected
async def create_cmd(client: ReferralClient, patient_id: str, target: str | None,
                     department: str | None, urgency: str, direction: str,
                     reason_code: str | None, reason_system: str, reason_text: str | None,
                     notes: str, consent: str | None, based_on: str | None,
                     discharge_summary: str, follow_ups: tuple[str, ...],
                     request_id: str | None) -> None:
    """Refer PATIENT_ID (the patient's FHIR id at your site) to another site."""
    plan = []
    for entry in follow_ups:
        days, sep, what = entry.partition(":")
        if not sep or not days.strip().isdigit() or not what.strip():
            raise InvalidInput(f"--follow-up must look like '7:wound check', got {entry!r}")
        plan.append((int(days), what.strip()))
    reason = {"system": reason_system, "code": reason_code or "", "text": reason_text or ""}
    ref, created = await client.create(NewReferral(
        patient_id=patient_id, urgency=urgency, direction=direction, target_site=target,
        department=department, reason={k: v for k, v in reason.items() if v} if reason_code
        or reason_text else {}, notes=notes, consent_method=consent, request_id=request_id,
        based_on=based_on, discharge_summary=discharge_summary, follow_ups=tuple(plan)))
    verb = "sent" if created else "was already sent"
    _done(ref, f"{verb} to {ref.owner_site}")
    _out().print(f"  triage due by {_time(ref.acknowledge_by)}; follow it with "
                   f"`federation referral show {ref.id}`")


@referral.command("list")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["requested", "accepted", "in-progress", "completed",
                                 "rejected", "cancelled"]), help="Only these (repeatable).")
@click.option("--to", "owner", default="", help="Only referrals to this site.")
@click.option("--from", "requester", default="", help="Only referrals from this site.")
@click.option("--person", default="", help="Only this EMPI person.")
@click.option("--direction", type=click.Choice(["upward", "downward"]), default=None)
@click.option("--escalated", is_flag=True, help="Only those past their time limit.")
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--per-page", type=click.IntRange(1, 200), default=20, show_default=True)
@_connected
async def list_cmd(client: ReferralClient, statuses: tuple[str, ...], owner: str,
                   requester: str, person: str, direction: str | None, escalated: bool,
                   page: int, per_page: int) -> None:
    """Referrals to or from your site, newest change first."""
    rows, total = await client.search(
        status=list(statuses), owner_site=owner, requester_site=requester, person_id=person,
        direction=direction or "", escalated_only=escalated, offset=(page - 1) * per_page,
        limit=per_page)
    table = Table(title=f"Referrals ({total}; page {page})", header_style="bold")
    table.add_column("id", no_wrap=True)
    for column in ("dir", "urgency", "from", "to", "department", "state", "updated",
                   "triage by"):
        table.add_column(column)
    for r in rows:
        flag = " [red]⚑ escalated[/]" if r.escalated else ""
        table.add_row(r.id, "↑" if r.direction == "upward" else "↓", r.urgency,
                      r.requester_site, r.owner_site,
                      r.department or "—", _state(r) + flag, _time(r.updated),
                      _time(r.acknowledge_by) if r.status == "requested" else "")
    _out().print(table)


@referral.command("show")
@click.argument("referral_id")
@click.option("--json", "as_json", is_flag=True, help="Print the FHIR Task and resources.")
@_connected
async def show_cmd(client: ReferralClient, referral_id: str, as_json: bool) -> None:
    """One referral: where it stands, its history, and what reached which site."""
    d = await client.get(referral_id)
    r = d.referral
    if as_json:
        click.echo(json.dumps({"Task": r.task, **d.resources}, ensure_ascii=False, indent=2))
        return
    _out().print(f"[bold]{r.id}[/]  {r.direction} · {r.urgency} · {_state(r)} "
                   f"(version {r.version}){'  [red]⚑ escalated[/]' if r.escalated else ''}")
    _out().print(f"  from {r.requester_site}/{r.requester_user} to {r.owner_site}"
                   f"{' · ' + r.department if r.department else ''}; patient {r.patient_id} "
                   f"(EMPI person {r.person_id})")
    for label, value in (("based on", r.based_on), ("replaces", r.replaces),
                         ("redirected to", r.redirected_to)):
        if value:
            _out().print(f"  {label} {value}")
    history = Table(title="History", header_style="bold")
    for column in ("#", "when", "action", "by", "to state", "note"):
        history.add_column(column)
    for h in d.history:
        history.add_row(str(h["version"]), _time(h["at"]), h["action"], h["actor"], h["to"],
                        h["note"])
    _out().print(history)
    deliveries = Table(title="Deliveries to node inboxes", header_style="bold")
    for column in ("site", "kind", "what", "delivered", "acknowledged"):
        deliveries.add_column(column)
    for m in d.deliveries:
        deliveries.add_row(m["site"], m["kind"], m["purpose"], "yes" if m["delivered"] else
                           "[yellow]pending[/]", "yes" if m["acknowledged"] else "—")
    _out().print(deliveries)
    for work in d.pending_work:
        _out().print(f"  [yellow]still to do: {work}[/]")
    _out().print("  next: " + (", ".join(d.allowed_actions) or "nothing (finished)"))


def _move(name: str, verb: str, help_text: str, *options: Callable[[Any], Any],
          details: Callable[..., Details] = lambda **_: Details(),
          action: str | None = None) -> None:
    """Register ``federation referral <name> REFERRAL_ID [options]`` for the state
    machine's ``action`` (``name`` unless given)."""

    @click.argument("referral_id")
    @click.option("--version", "expected_version", type=int,
                  help="Refuse if the referral changed since you looked (its version).")
    @_connected
    async def command(client: ReferralClient, referral_id: str,
                      expected_version: int | None, **values: Any) -> None:
        ref = await client.act(referral_id, action or name, details(**values),
                               expected_version=expected_version)
        _done(ref, verb)

    command.__doc__ = help_text
    for option in reversed(options):
        command = option(command)
    referral.command(name, help=help_text)(command)


def _result(result: str | None, result_file: Path | None, kind: str) -> Details:
    if result_file is not None:
        text = result_file.read_text(encoding="utf-8")
        try:
            resource = json.loads(text)
        except ValueError:
            return Details(result_text=text, result_kind=kind)
        return Details(result_resource=resource, result_kind=kind)
    return Details(result_text=result or "", result_kind=kind)


_move("accept", "accepted", "Accept a referral to your site, with an appointment time or an "
      "admission note (or both).",
      click.option("--appointment", help="e.g. '2026-12-01 09:30' (local) or with +08:00."),
      click.option("--admission", default="", help="Admission note, e.g. 'cardiology ward'."),
      details=lambda appointment, admission: Details(
          appointment_start=_when(appointment, "--appointment"), admission_note=admission))
_move("reject", "rejected", f"Reject a referral with a coded reason ({_reasons_help()}).",
      click.option("--reason", "code", required=True, help=_reasons_help()),
      click.option("--text", default="", help="Explanation for the referring doctor."),
      details=lambda code, text: Details(reason_code=code, reason_text=text))
_move("redirect", "redirected", "Pass a referral on to another site (a new referral, "
      "chained to this one).",
      click.option("--to", "target", required=True, help="The site to send it on to."),
      click.option("--department", default="", help="The department there."),
      click.option("--reason", "code", default="", help="Coded reason (optional)."),
      click.option("--text", default="", help="Explanation."),
      details=lambda target, department, code, text: Details(
          target_site=target, department=department, reason_code=code, reason_text=text))
_move("book", "booked", "Book (or re-book) the appointment.",
      click.option("--appointment", required=True, help="e.g. '2026-12-01 09:30'."),
      details=lambda appointment: Details(appointment_start=_when(appointment, "--appointment")))
_move("no-show", "marked no-show", "Record that the patient did not come.")
_move("note", "noted", "Send an interim note to the other site.",
      click.argument("text"), details=lambda text: Details(note=text))
_move("start", "started", "Record that the visit or admission has begun.")
_move("follow-up", "follow-up recorded", "Record a follow-up visit of a downward referral "
      "(it goes back to the referring specialist).",
      click.argument("text"), click.option("--visit-date", help="When (default now)."),
      details=lambda text, visit_date: Details(note=text,
                                               visit_date=_when(visit_date, "--visit-date")))
_move("complete", "completed", "Complete with the result (consult note or discharge "
      "summary), which goes back to the referring site.",
      click.option("--result", help="The result text."),
      click.option("--result-file", type=click.Path(path_type=Path, exists=True,
                                                    dir_okay=False),
                   help="A text file, or a FHIR DocumentReference/DiagnosticReport JSON."),
      click.option("--kind", type=click.Choice(["consult-note", "discharge-summary"]),
                   default="consult-note", show_default=True),
      details=lambda result, result_file, kind: _result(result, result_file, kind))
_move("cancel", "cancelled", "Cancel a referral your site sent (before the visit starts).",
      click.option("--reason", default="", help="Why."),
      details=lambda reason: Details(reason_text=reason))
_move("receipt", "closed", "Confirm that the result reached you (your node does this by "
      "itself when it stores the result).", action="receive-result")


@referral.command("turnaround")
@_connected
async def turnaround_cmd(client: ReferralClient) -> None:
    """Turnaround per target site and department: time to triage, complete, close."""
    table = Table(title="Referral turnaround", header_style="bold")
    for column in ("site", "department", "referrals", "open", "triaged", "median triage",
                   "p90 triage", "median complete", "closed loop", "escalated", "overdue"):
        table.add_column(column)

    def fmt(v: float | None, unit: str) -> str:
        return "—" if v is None else f"{v:g} {unit}"

    for t in await client.turnaround():
        table.add_row(t.site_id, t.department, str(t.tasks), str(t.open), str(t.acknowledged),
                      fmt(t.ack_median_min, "min"), fmt(t.ack_p90_min, "min"),
                      fmt(t.complete_median_h, "h"), str(t.closed_loop), str(t.escalated),
                      str(t.overdue_open))
    _out().print(table)


@referral.command("alerts")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@_connected
async def alerts_cmd(client: ReferralClient, limit: int) -> None:
    """Referrals that missed their time limit (your site's; all for regional admins)."""
    table = Table(title="Time-limit alerts", header_style="bold")
    for column in ("when", "referral", "for", "why"):
        table.add_column(column)
    for a in await client.alerts(limit):
        table.add_row(_time(a["at"]), a["referral"], a["audience"], a["reason"])
    _out().print(table)
