"""What each consult move writes: attributes, the assignee, FHIR resources and inbox
messages, as a :class:`~federation.workflow.records.Change`. Pure — the workflow store
calls these builders inside the transaction that holds the consult's row lock, which is
what makes a claim atomic: of twenty pool members claiming at once, the first to take
the lock finds the consult ``requested`` and claims it; the other nineteen find it
``claimed`` and get :class:`~federation.errors.InvalidTransition`.

Messages: every change goes to the other party's node as the updated Task; the request
goes to the hub as ``consult``; the signed report (with every earlier version, marked
superseded) goes back to the requester as ``report``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from federation.consult import fhir
from federation.consult.report import SignedReport, mark_superseded, provenance
from federation.consult.rules import ConsultRules, Pool
from federation.errors import InvalidInput, PermissionDenied
from federation.security.principal import Principal
from federation.workflow.records import KEEP, Change, Message, NewTask, TaskRow
from federation.workflow.state import Rule

__all__ = ["Details", "builder", "payload", "notices", "row_of", "REPORT_PURPOSE"]

Loader = Callable[[str], dict[str, Any] | None]
Builder = Callable[[TaskRow, Rule, Loader], Change]
REPORT_PURPOSE = "consult-report"


@dataclass(frozen=True, slots=True)
class Details:
    """What a person gave with a move (each move reads the fields it needs)."""

    note: str = ""
    to_user: str = ""                        # hand-over
    slot_start: dt.datetime | None = None    # schedule
    participants: tuple[str, ...] = field(default_factory=tuple)   # schedule
    signed: SignedReport | None = None       # report / amend


def payload(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()


def recipients(actor: Principal, row: TaskRow) -> list[str]:
    return [site for site in dict.fromkeys((row.requester_site, row.owner_site))
            if site != actor.site_id]


def notices(actor: Principal, purpose: str = "status") -> Callable[[TaskRow], list[Message]]:
    def build(after: TaskRow) -> list[Message]:
        task = payload(fhir.task_resource(after))
        return [Message(site, "notice", purpose, task, actor.site_id)
                for site in recipients(actor, after)]
    return build


def row_of(new: NewTask, now: dt.datetime) -> TaskRow:
    """The row a new consult will have once stored (version 1), for its first message."""
    return TaskRow(new.task_id, new.workflow, new.category, str(new.state.status),
                   new.state.business, 1, new.requester_site, new.requester_user,
                   new.owner_site, new.owner_department, new.patient_id, new.person_id,
                   new.urgency, new.request_id, new.based_on, new.replaces,
                   dict(new.attributes), now, now, new.ack_due_at, new.complete_due_at,
                   None, None, None, None)


def builder(action: str, actor: Principal, d: Details, now: dt.datetime,
            rules: ConsultRules) -> Builder:
    """The builder for ``action`` (the store has checked it against the table)."""
    move = {"claim": _claim, "decline": _decline, "hand-over": _hand_over,
            "schedule": _schedule, "start": _start, "end": _end, "report": _report,
            "amend": _report, "ack": _ack, "cancel": _cancel}[action]
    return lambda row, rule, load: move(row, rule, load, actor, d, now,
                                        rules.pool(row.owner_department or ""), rules)


def _claim(row: TaskRow, rule: Rule, load: Loader, actor: Principal, d: Details,
           now: dt.datetime, pool: Pool, rules: ConsultRules) -> Change:
    pool.check_member(actor.site_id, actor.user_id, actor.roles, f"claim consult {row.task_id}")
    return Change(assignee=actor.actor_id, attributes={"claimed_at": fhir.iso(now)},
                  messages=notices(actor), note=d.note or None,
                  detail={"assignee": actor.actor_id})


def _decline(row: TaskRow, rule: Rule, load: Loader, actor: Principal, d: Details,
             now: dt.datetime, pool: Pool, rules: ConsultRules) -> Change:
    declined = [*row.attributes.get("declined_by", []), actor.actor_id]
    if row.assignee is None:          # a pool member passing: it stays with the pool
        pool.check_member(actor.site_id, actor.user_id, actor.roles,
                          f"decline consult {row.task_id}")
        return Change(attributes={"declined_by": declined}, note=d.note or None,
                      detail={"declined_by": actor.actor_id})
    return Change(assignee=None, attributes={"declined_by": declined},  # back to the pool
                  messages=notices(actor), note=d.note or None,
                  detail={"released_by": actor.actor_id})


def _member(pool: Pool, user: str, doing: str) -> str:
    if not user or ("*" not in pool.members and user not in pool.members):
        raise PermissionDenied(f"{user or 'nobody'} is not a member of pool {pool.pool_id} "
                               f"at {pool.site_id}: {doing} only to its members")
    return f"{pool.site_id}/{user}"


def _hand_over(row: TaskRow, rule: Rule, load: Loader, actor: Principal, d: Details,
               now: dt.datetime, pool: Pool, rules: ConsultRules) -> Change:
    to = _member(pool, d.to_user, "hand a consult over")
    if to == row.assignee:
        raise InvalidInput(f"consult {row.task_id} is already with {d.to_user}")
    appt = load("Appointment")
    resources = {}
    if appt is not None:     # the session moves with the case
        appt = appt | {"participant": [
            p if p["actor"]["identifier"]["value"] != row.assignee.split("/", 1)[-1]  # type: ignore[union-attr]
            else {"actor": fhir.practitioner_ref(pool.site_id, d.to_user), "status": "accepted"}
            for p in appt["participant"]]}
        resources["Appointment"] = appt
    return Change(assignee=to, resources=resources, messages=notices(actor),
                  note=d.note or None, detail={"from": row.assignee, "to": to})


def _schedule(row: TaskRow, rule: Rule, load: Loader, actor: Principal, d: Details,
              now: dt.datetime, pool: Pool, rules: ConsultRules) -> Change:
    if row.attributes.get("mode") != "interactive":
        raise InvalidInput(f"consult {row.task_id} is offline (store-and-forward): it is "
                           "reported without a session")
    start = d.slot_start
    if start is None or start.tzinfo is None:
        raise InvalidInput("scheduling needs the slot's start with a time zone")
    if start <= now:
        raise InvalidInput("the slot must be in the future")
    if not pool.slots.is_slot(start):
        hint = ", ".join(fhir.iso(s) or "" for s in pool.slots.upcoming(now, 3))
        raise InvalidInput(f"{fhir.iso(start)} is not a free slot of pool {pool.pool_id}; "
                           f"next slots: {hint}")
    others = [_member(pool, u, "invite to a session") for u in d.participants]
    people = [tuple(p.split("/", 1)) for p in dict.fromkeys([row.assignee or actor.actor_id,
                                                             *others])]
    link = rules.meeting_link(row.task_id, pool.pool_id, start)
    appt = fhir.appointment(row, start, pool.slots.minutes, link,
                            [(s, u) for s, u in people])
    return Change(attributes={"appointment_start": fhir.iso(start), "meeting_link": link,
                              "participants": ["/".join(p) for p in people]},
                  resources={"Appointment": appt}, messages=notices(actor),
                  detail={"slot": fhir.iso(start)})


def _start(row: TaskRow, rule: Rule, load: Loader, actor: Principal, d: Details,
           now: dt.datetime, pool: Pool, rules: ConsultRules) -> Change:
    appt = load("Appointment") or {}
    return Change(attributes={"session_started": fhir.iso(now)},
                  resources={"Appointment": appt | {"status": "arrived"}} if appt else {},
                  messages=notices(actor), detail={"started": fhir.iso(now)})


def _end(row: TaskRow, rule: Rule, load: Loader, actor: Principal, d: Details,
         now: dt.datetime, pool: Pool, rules: ConsultRules) -> Change:
    appt = load("Appointment") or {}
    return Change(attributes={"session_ended": fhir.iso(now)},
                  resources={"Appointment": appt | {"status": "fulfilled"}} if appt else {},
                  messages=notices(actor), note=d.note or None,
                  detail={"ended": fhir.iso(now)})


def _report(row: TaskRow, rule: Rule, load: Loader, actor: Principal, d: Details,
            now: dt.datetime, pool: Pool, rules: ConsultRules) -> Change:
    """Keep the signed report as version n; an amendment keeps every earlier version,
    marked superseded (outside what the signature covers), and sends them along."""
    assert d.signed is not None
    versions = list(row.attributes.get("reports", []))
    n = len(versions) + 1
    report = d.signed.report
    expected = f"{row.task_id}-r{n}"
    if rule.action == "report" and versions:
        raise InvalidInput(f"consult {row.task_id} has a report; amend it instead")
    if report.get("id") != expected:
        raise InvalidInput(f"this report would be version {n} of consult {row.task_id}: its "
                           f"id must be {expected}, not {report.get('id')!r}; sign it again")
    previous = f"{row.task_id}-r{n - 1}" if versions else None
    replaces = next((e.get("valueReference", {}).get("reference") for e in
                     report.get("extension", []) if e.get("url", "").endswith(":replaces")), None)
    if previous and replaces != f"DiagnosticReport/{previous}":
        raise InvalidInput(f"an amendment must name the version it replaces "
                           f"(DiagnosticReport/{previous})")
    prov = provenance(d.signed, when=now, site_id=actor.site_id or "", user_id=actor.user_id,
                      replaces=previous)
    resources: dict[str, dict[str, Any]] = {f"Report.v{n}": report, f"Provenance.v{n}": prov}
    history = []
    for v in range(1, n):
        old = load(f"Report.v{v}")
        if old is None:
            continue
        if v == n - 1:
            old = mark_superseded(old, expected, now)
            resources[f"Report.v{v}"] = old
        history += [old, *(p for p in (load(f"Provenance.v{v}"),) if p)]
    versions.append({"id": expected, "version": n, "signer": actor.actor_id,
                     "at": fhir.iso(now)})
    ref = f"DiagnosticReport/{expected}"

    def messages(after: TaskRow) -> list[Message]:
        bundle = fhir.report_bundle(f"{expected}-delivery", after, report, prov, history, now)
        return [Message(after.requester_site, "report", REPORT_PURPOSE, payload(bundle),
                        actor.site_id)]
    return Change(assignee=KEEP, attributes={"reports": versions, "report": ref},
                  resources=resources, messages=messages, note=d.note or None,
                  detail={"report": ref, "version": n})


def _ack(row: TaskRow, rule: Rule, load: Loader, actor: Principal, d: Details,
         now: dt.datetime, pool: Pool, rules: ConsultRules) -> Change:
    return Change(attributes={"acknowledged": row.attributes.get("report")},
                  messages=notices(actor), note=d.note or None,
                  detail={"report": row.attributes.get("report")})


def _cancel(row: TaskRow, rule: Rule, load: Loader, actor: Principal, d: Details,
            now: dt.datetime, pool: Pool, rules: ConsultRules) -> Change:
    appt = load("Appointment")
    return Change(attributes={"status_reason": d.note or "cancelled by the requester"},
                  resources={"Appointment": appt | {"status": "cancelled"}} if appt else {},
                  messages=notices(actor), note=d.note or None)
