"""Two-way referral (双向转诊) on the gateway: create, move, read, search, close the loop,
escalate — for a :class:`~federation.security.principal.Principal`, whatever transport
brought them (gRPC for nodes and staff, the CLI, the FHIR search API).

Creating a referral: check the creator against the table and the consortium's routing
rules, require the patient's consent, resolve the origin record to its EMPI person, then
store the Task with its ServiceRequest and Consent, queue the referral for the target's
node and record the job of its packet — in one transaction; nothing is queued when any
step fails. The packet (the patient's recent clinical record) is then fetched from the
origin node with a deadline (:meth:`ReferralService.assemble_packets`, run by every
replica, each job leased by one) and queued behind the referral: the target sees the
referral at once and its packet as soon as the origin node answers, retried with backoff
while that node is away. Every call writes an exchange-log row with a patient hash,
never patient data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from federation.errors import (
    FederationError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from federation.identity.index import RecordRef
from federation.identity.store import IdentityStore
from federation.referral import fhir
from federation.referral.moves import (
    Details,
    builder,
    packet_bundle,
    payload,
    referral_bundle,
    row_of,
)
from federation.referral.rules import MAX_DEPARTMENT, ReferralRules, SiteFacts
from federation.referral.state import ReferralState, table_for
from federation.security.principal import SYSTEM, Principal
from federation.store import GatewayStore, SiteRow, WorkItemRow
from federation.workflow.exchange import log_call
from federation.workflow.packet import PACKET_JOB, PacketJobs, fetch_packet
from federation.workflow.records import (
    DeliveryRow,
    EventRow,
    Message,
    NewTask,
    NoticeRow,
    Spawn,
    TaskFilter,
    TaskRow,
)
from federation.workflow.state import Actor, Party, parties_of
from federation.workflow.store import WorkflowStore
from federation.workflow.turnaround import Turnaround, turnaround

__all__ = ["ReferralService", "NewReferral", "ReferralView", "WORKFLOW", "CONSENT_METHODS",
           "PACKET_JOB"]

log = logging.getLogger("federation.referral")

WORKFLOW = "referral"
CONSENT_METHODS = ("written", "verbal", "electronic")


@dataclass(frozen=True, slots=True)
class NewReferral:
    patient_id: str                       # the FHIR Patient id at the creator's site
    urgency: str = "routine"
    direction: str = "upward"
    target_site: str | None = None        # None: the first the rules allow
    department: str | None = None
    reason: dict[str, str] = field(default_factory=dict)   # system, code, display, text
    notes: str = ""
    consent_method: str | None = None     # written | verbal | electronic; None = no consent
    request_id: str | None = None         # the caller's idempotency key
    based_on: str | None = None           # downward: the upward referral it follows
    discharge_summary: str = ""
    follow_ups: tuple[tuple[int, str], ...] = ()   # (days from now, what)


@dataclass(frozen=True, slots=True)
class ReferralView:
    task: TaskRow
    resources: dict[str, dict[str, Any]]
    history: list[EventRow]
    deliveries: list[DeliveryRow]
    allowed: list[str]                                 # the state's moves, for anyone
    pending: list[str] = field(default_factory=list)   # work the gateway still owes it
    permitted: list[str] = field(default_factory=list)  # the moves the viewer may make now


class ReferralService:
    def __init__(self, store: GatewayStore, workflows: WorkflowStore, rules: ReferralRules, *,
                 identity: IdentityStore | None, clients: Any, packet_deadline_s: float = 5.0,
                 wake: Callable[[str], None] | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._store = store
        self._workflows = workflows
        self.rules = rules
        self._identity = identity
        self._clients = clients
        self._deadline = packet_deadline_s
        self._wake = wake or (lambda site: None)
        self._now = clock
        self._packets = PacketJobs(
            store, workflows, clients, workflow=WORKFLOW, deliver=_deliver_packet,
            deadline_s=packet_deadline_s, bundle=fhir.bundle, wake=self._wake, clock=clock)

    # ------------------------------------------------------------------ create

    async def create(self, who: Principal, new: NewReferral) -> tuple[TaskRow, bool]:
        """Store and send a referral; (task, False) when ``request_id`` was seen before."""
        started = time.perf_counter()
        target = new.target_site
        try:
            task, created = await self._create(who, new)
            target = task.owner_site
            await self._log(who, "Referrals/Create", target, new.patient_id, "ok", "OK",
                            started)
            return task, created
        except FederationError as exc:
            # the log keeps a hash of the patient, never their id in clear
            detail = exc.message.replace(new.patient_id, "<patient>") if new.patient_id \
                else exc.message
            await self._log(who, "Referrals/Create", target, new.patient_id, "error",
                            exc.code, started, detail=detail)
            raise

    async def _create(self, who: Principal, new: NewReferral) -> tuple[TaskRow, bool]:
        if who.kind not in ("person", "node") or not who.site_id:
            raise PermissionDenied(f"{who.describe()} cannot create referrals; staff do, with "
                                   "a person certificate or through their site's node")
        table = table_for(new.direction)
        table.transition(ReferralState.DRAFT, "create",
                         Actor(who.describe(), frozenset({Party.REQUESTER}), who.roles),
                         subject="a referral")
        if new.direction not in ("upward", "downward"):
            raise InvalidInput("direction must be upward or downward", field="direction")
        if new.urgency not in self.rules.urgencies:
            raise InvalidInput(f"urgency must be one of {', '.join(self.rules.urgencies)}",
                               field="urgency")
        if not new.patient_id:
            raise InvalidInput("a referral needs the patient's id at your site (patient_id)",
                               field="patient_id")
        _check_widths(department=new.department, request_id=new.request_id)
        for days, what in new.follow_ups:
            if days < 0 or not what.strip():
                raise InvalidInput("each follow-up visit needs days from now (0 or more) and "
                                   "what it is for", field="follow_ups")
        if new.request_id:
            existing = await asyncio.to_thread(self._workflows.by_request_id, who.site_id,
                                               new.request_id)
            if existing is not None:
                return existing, False
        origin, target = await self._route(who.site_id, new)
        if new.consent_method is None:
            raise InvalidInput(
                "the patient's consent to share their record with the target is required: "
                f"record it ({' | '.join(CONSENT_METHODS)}); nothing was sent", field="consent")
        if new.consent_method not in CONSENT_METHODS:
            raise InvalidInput(f"consent must be one of {', '.join(CONSENT_METHODS)}",
                               field="consent")
        person_id = await self._person(who.site_id, new.patient_id)
        if new.based_on:
            await self._check_based_on(who, new, person_id)
        elif new.direction == "downward" and not new.follow_ups:
            raise InvalidInput("a downward referral needs a follow-up plan (at least one "
                               "follow-up visit: days from now and what)", field="follow_ups")
        now = self._now()
        limits = self.rules.time_limits
        task = NewTask(
            task_id=f"ref-{uuid.uuid4().hex[:16]}", workflow=WORKFLOW, category=new.direction,
            state=ReferralState.REQUESTED, requester_site=who.site_id,
            requester_user=who.user_id, owner_site=target.site_id,
            owner_department=new.department or None, patient_id=new.patient_id,
            person_id=person_id, urgency=new.urgency, request_id=new.request_id,
            based_on=new.based_on, attributes={"reason": new.reason},
            ack_due_at=limits.acknowledge_due(new.urgency, now),
            complete_due_at=limits.complete_due(new.urgency, now))
        sr = fhir.validated(fhir.service_request(
            task.task_id, direction=new.direction, urgency=new.urgency,
            requester_site=who.site_id, requester_user=who.user_id, target_site=target.site_id,
            department=new.department, patient_id=new.patient_id, person_id=person_id,
            reason=new.reason, notes=new.notes, authored=now, based_on=new.based_on),
            "the ServiceRequest")
        consent = fhir.validated(fhir.consent(
            f"{task.task_id}-consent", site_id=who.site_id, patient_id=new.patient_id,
            person_id=person_id, target_site=target.site_id, method=new.consent_method,
            recorded_by=who.user_id, when=now), "the Consent")
        extra = self._downward_documents(who, new, task, now)
        resources = {"ServiceRequest": sr, "Consent": consent,
                     **{r["resourceType"]: r for r in extra}}
        referral = referral_bundle(row_of(task, now), sr, consent, extra, now)
        message = Message(target.site_id, "referral", "referral", payload(referral), who.site_id)
        stored, created = await asyncio.to_thread(
            self._workflows.create, task, resources, [message], actor=who, now=now,
            note=new.notes or None, jobs=(PACKET_JOB,))
        if created:
            self._wake(target.site_id)
            self._packets.due.set()
        return stored, created

    async def _route(self, origin_id: str, new: NewReferral) -> tuple[SiteFacts, SiteFacts]:
        sites = {s.site_id: SiteFacts(s.site_id, s.tier, s.parent_site_id)
                 for s in await asyncio.to_thread(self._store.list_sites)}
        origin = sites.get(origin_id)
        if origin is None:
            raise PermissionDenied(f"site {origin_id} is not a member of the consortium")
        target_id = new.target_site
        if not target_id:
            options = self.rules.targets(new.direction, new.urgency, origin, list(sites.values()))
            if not options:
                raise InvalidInput(f"the consortium's rules name no {new.urgency} "
                                   f"{new.direction} target for {origin_id}",
                                   field="target_site")
            target_id = options[0]
        target = sites.get(target_id)
        if target is None:
            raise NotFound(f"target site '{target_id}' is not a member of the consortium")
        self.rules.check_route(new.direction, new.urgency, origin, target)
        return origin, target

    async def _person(self, site_id: str, patient_id: str) -> str:
        if self._identity is None:
            raise Unavailable("this gateway keeps no master patient index; referrals need one")
        person = await asyncio.to_thread(self._identity.person_of,
                                         RecordRef(site_id, patient_id))
        if person is None:
            raise NotFound(
                f"Patient/{patient_id} at {site_id} is not (yet) in the master patient index; "
                "it is linked once the gateway's archive has read the site's change feed")
        return person

    async def _check_based_on(self, who: Principal, new: NewReferral, person_id: str) -> None:
        if new.direction != "downward":
            raise InvalidInput("only a downward referral is based on an earlier (upward) one",
                               field="based_on")
        up = await asyncio.to_thread(self._workflows.get, new.based_on, WORKFLOW)
        if up.owner_site != who.site_id:
            raise PermissionDenied(f"referral {up.task_id} was addressed to {up.owner_site}; "
                                   f"only that site refers the patient back down from it")
        if up.person_id != person_id:
            raise InvalidInput(f"referral {up.task_id} is about another person than "
                               f"Patient/{new.patient_id}", field="based_on")
        if not new.follow_ups:
            raise InvalidInput("a downward referral needs a follow-up plan (at least one "
                               "follow-up visit: days from now and what)", field="follow_ups")

    def _downward_documents(self, who: Principal, new: NewReferral, task: NewTask,
                            now: dt.datetime) -> list[dict[str, Any]]:
        if new.direction != "downward":
            return []
        row = row_of(task, now)
        out = [fhir.care_plan(
            f"{task.task_id}-plan", task_id=task.task_id, site_id=who.site_id,
            patient_id=new.patient_id, person_id=task.person_id, author_site=who.site_id,
            author_user=who.user_id, created=now, title="rehabilitation and follow-up plan",
            visits=[(now + dt.timedelta(days=days), what) for days, what in new.follow_ups])]
        if new.discharge_summary:
            out.append(fhir.document(f"{task.task_id}-discharge", row, title="Discharge summary",
                                     text=new.discharge_summary, when=now, loinc="18842-5",
                                     author_site=who.site_id, author_user=who.user_id))
        return [fhir.validated(r) for r in out]

    # ------------------------------------------------------------------ moves

    async def act(self, who: Principal, task_id: str, action: str, d: Details, *,
                  expected_version: int | None = None) -> TaskRow:
        started = time.perf_counter()
        try:
            row = await self._act(who, task_id, action, d, expected_version)
        except FederationError as exc:
            await self._log(who, f"Referrals/{action}", None, None, "error", exc.code,
                            started, detail=exc.message, task_id=task_id)
            raise
        await self._log(who, f"Referrals/{action}", row.owner_site, None, "ok", "OK", started,
                        task_id=task_id, patient=(row.requester_site, row.patient_id))
        return row

    async def _act(self, who: Principal, task_id: str, action: str, d: Details,
                   expected_version: int | None) -> TaskRow:
        if who.kind == "operator":
            raise PermissionDenied("operator certificates read referrals; staff act on them")
        _check_details(action, d, self.rules)
        if action == "redirect":
            await self._check_redirect(who, task_id, d.target_site)
        now = self._now()
        steps = [(action, builder(action, who, d, now, redirect=self._redirector(who, d, now)))]
        if action == "accept" and d.appointment_start is not None:
            steps.append(("book", builder("book", who, d, now)))
        row = await asyncio.to_thread(
            self._workflows.act, task_id, steps, who, table_for, workflow=WORKFLOW, now=now,
            expected_version=expected_version, subject=f"referral {task_id}")
        for site in (row.requester_site, row.owner_site, row.attributes.get("redirected_to")):
            if site:
                self._wake(site)
        return row

    async def _check_redirect(self, who: Principal, task_id: str, target_id: str) -> None:
        task = await asyncio.to_thread(self._workflows.get, task_id, WORKFLOW)
        if target_id in (task.requester_site, task.owner_site):
            raise InvalidInput(f"redirect the referral to a third site, not {target_id}",
                               field="target_site")
        sites = {s.site_id: SiteFacts(s.site_id, s.tier, s.parent_site_id)
                 for s in await asyncio.to_thread(self._store.list_sites)}
        if target_id not in sites:
            raise NotFound(f"target site '{target_id}' is not a member of the consortium")
        here = sites.get(who.site_id or "")
        if here is not None and who.site_id == task.owner_site:
            self.rules.check_route("redirect", task.urgency, here, sites[target_id])

    def _redirector(self, who: Principal, d: Details, now: dt.datetime
                    ) -> Callable[[TaskRow, Callable[[str], dict[str, Any] | None]], Spawn]:
        def spawn(row: TaskRow, load: Callable[[str], dict[str, Any] | None]) -> Spawn:
            target = d.target_site
            new = NewTask(
                task_id=f"ref-{uuid.uuid4().hex[:16]}", workflow=WORKFLOW,
                category=row.category, state=ReferralState.REQUESTED,
                requester_site=row.requester_site, requester_user=row.requester_user,
                owner_site=target, owner_department=d.department or None,
                patient_id=row.patient_id, person_id=row.person_id, urgency=row.urgency,
                based_on=row.based_on, replaces=row.task_id,
                attributes={"reason": row.attributes.get("reason", {}),
                            "redirected_from": row.task_id},
                ack_due_at=self.rules.time_limits.acknowledge_due(row.urgency, now),
                complete_due_at=self.rules.time_limits.complete_due(row.urgency, now))
            old_sr, old_consent, old_packet = load("ServiceRequest"), load("Consent"), load("Packet")
            sr = dict(old_sr or {}) | {
                "id": new.task_id, "identifier": [{"system": fhir.REFERRAL_SYSTEM,
                                                   "value": new.task_id}],
                "performer": [fhir.org_ref(target)], "authoredOn": fhir.iso(now),
                "replaces": [{"reference": f"ServiceRequest/{row.task_id}"}]}
            consent = dict(old_consent or {}) | {"id": f"{new.task_id}-consent"}
            if "provision" in consent:  # the permit names the recipient: now the new target
                consent["provision"] = consent["provision"] | {"actor": [{
                    "role": consent["provision"]["actor"][0]["role"],
                    "reference": fhir.org_ref(target)}]}
            first = row_of(new, now)
            extra = [r for r in (load("CarePlan"), load("DocumentReference")) if r]
            messages = [Message(target, "referral", "referral", payload(referral_bundle(
                first, sr, consent, extra, now)), row.requester_site)]
            resources = {"ServiceRequest": sr, "Consent": consent,
                         **{r["resourceType"]: r for r in extra}}
            if old_packet is not None:     # the clinical packet travels on as it was
                resources["Packet"] = old_packet
                messages.append(Message(target, "referral", "packet", payload(packet_bundle(
                    first, old_packet, now)), row.requester_site))
            return Spawn(new, resources, messages,
                         note=f"redirected by {who.describe()} from {row.task_id}",
                         jobs=() if old_packet is not None else (PACKET_JOB,))
        return spawn

    async def assemble_packets(self, limit: int = 20) -> int:
        """Fetch and queue the packets referrals are owed (:class:`PacketJobs`)."""
        return await self._packets.assemble(limit)

    @property
    def packets_due(self) -> asyncio.Event:
        return self._packets.due

    async def receipt(self, item: WorkItemRow) -> TaskRow | None:
        """A node acknowledged a work item: when it was a referral's result at the
        requester's site, the loop is closed (IHE 360X). Idempotent."""
        if item.kind != "report":
            return None                      # only reports carry results; spare the lookup
        found = await asyncio.to_thread(self._workflows.message, item.item_id)
        if found is None or found[2] != "result" or found[1] != item.site_id:
            return None
        try:
            return await asyncio.to_thread(
                self._workflows.act, found[0],
                [("receive-result", builder("receive-result", SYSTEM, Details(), self._now()))],
                SYSTEM, table_for, workflow=WORKFLOW, now=self._now())
        except InvalidTransition:
            return None  # already closed (a redelivered result acked again)

    # ------------------------------------------------------------------ time limits

    async def escalate(self) -> list[TaskRow]:
        """Escalate every referral whose acknowledgement is overdue (once each)."""
        now = self._now()
        done = await asyncio.to_thread(self._workflows.escalate_overdue, WORKFLOW, now,
                                       lambda row: self._escalation_notices(row, now))
        for row in done:
            self._wake(row.owner_site)
            self._wake(row.requester_site)
        return done

    def _escalation_notices(self, row: TaskRow, now: dt.datetime
                            ) -> list[tuple[str, str, Message | None]]:
        due = fhir.iso(row.ack_due_at)
        reason = (f"{row.urgency} referral {row.task_id} from {row.requester_site} to "
                  f"{row.owner_site} was not triaged by {due}")
        out: list[tuple[str, str, Message | None]] = []
        for audience in self.rules.time_limits.notify:
            if audience == "regional-admin":
                out.append(("regional-admin", reason, None))
                continue
            site = row.owner_site if audience == "owner-site" else row.requester_site
            comm = fhir.communication(f"{row.task_id}-esc-{audience}", row, text=reason,
                                      sender_site=None, recipient_site=site, when=now,
                                      alert=True)
            out.append((f"site:{site}", reason,
                        Message(site, "notice", "escalation", payload(comm))))
        return out

    # ------------------------------------------------------------------ reading

    async def view(self, who: Principal, task_id: str) -> ReferralView:
        task = await asyncio.to_thread(self._workflows.get, task_id, WORKFLOW)
        _may_read(who, task)
        resources = await asyncio.to_thread(self._workflows.resources, task_id)
        history = await asyncio.to_thread(self._workflows.history, task_id)
        deliveries = await asyncio.to_thread(self._workflows.deliveries, task_id)
        table, state = table_for(task.category), task.state(ReferralState)
        jobs = await asyncio.to_thread(self._workflows.pending_jobs, task_id)
        pending = [f"{kind}: attempt {n}" + (f" — {error}" if error else "")
                   for kind, n, error in jobs]
        actor = Actor(who.describe(), parties_of(
            who.kind, who.site_id, who.roles, requester_site=task.requester_site,
            owner_site=task.owner_site, actor_id=who.actor_id, assignee=task.assignee),
            who.roles)
        return ReferralView(task, resources, history, deliveries, table.allowed(state),
                            pending, table.permitted(state, actor))

    async def members(self) -> list[SiteRow]:
        """The consortium's member sites (what a referral form may offer as targets)."""
        return await asyncio.to_thread(self._store.list_sites)

    async def preview_packet(self, who: Principal, patient_id: str, *,
                             purpose: str = "TREAT") -> dict[str, Any]:
        """The packet a referral of ``patient_id`` (at the caller's own site) would carry,
        fetched now from the site's node with the packet deadline — nothing is stored or
        sent. One node round trip, as assembling the real packet costs."""
        started = time.perf_counter()
        try:
            if who.kind != "person" or not who.site_id:
                raise PermissionDenied("a packet preview is for a site's staff")
            if not patient_id:
                raise InvalidInput("the preview needs the patient's id at your site",
                                   field="patient_id")
            async with self._packets.assembling:
                clinical = await fetch_packet(self._store, self._clients, who.site_id,
                                              patient_id, deadline_s=self._deadline,
                                              purpose=purpose)
        except FederationError as exc:
            detail = exc.message.replace(patient_id, "<patient>") if patient_id else exc.message
            await self._log(who, "Referrals/PacketPreview", who.site_id, patient_id, "error",
                            exc.code, started, detail=detail)
            raise
        await self._log(who, "Referrals/PacketPreview", who.site_id, patient_id, "ok", "OK",
                        started, records=len(clinical))
        return fhir.bundle(f"preview-{uuid.uuid4().hex[:12]}", clinical, self._now())

    async def search(self, who: Principal, where: TaskFilter, *, offset: int = 0,
                     limit: int = 20, sort: str = "-updated") -> tuple[list[TaskRow], int]:
        if not _sees_all(who):
            where = TaskFilter(**{**_fields(where), "involving_site": who.site_id})
        return await asyncio.to_thread(self._workflows.search, WORKFLOW, where, offset=offset,
                                       limit=limit, sort=sort)

    async def resources_named(self, task_ids: list[str], name: str) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(self._workflows.resources_named, task_ids, name)

    async def turnaround(self, since: dt.datetime | None = None) -> list[Turnaround]:
        rows = await asyncio.to_thread(self._workflows.all_tasks, WORKFLOW, since)
        return turnaround(rows, self._now())

    async def alerts(self, who: Principal, limit: int = 100) -> list[NoticeRow]:
        audience = None if _sees_all(who) else f"site:{who.site_id}"
        return await asyncio.to_thread(self._workflows.notices, audience=audience, limit=limit)

    # ------------------------------------------------------------------ exchange log

    async def _log(self, who: Principal, operation: str, target: str | None,
                   patient_id: str | None, outcome: str, code: str, started: float, *,
                   detail: str = "", task_id: str | None = None,
                   patient: tuple[str, str] | None = None, records: int = 0) -> None:
        if patient is None and patient_id and who.site_id:
            patient = (who.site_id, patient_id)
        await log_call(self._store, who, operation, now=self._now(), started=started,
                       target=target, outcome=outcome, code=code, detail=detail,
                       task_id=task_id, patient=patient, records=records)


def _deliver_packet(after: TaskRow, packet: dict[str, Any], now: dt.datetime) -> list[Message]:
    """The referral's packet follows the referral to its target."""
    return [Message(after.owner_site, "referral", "packet",
                    payload(packet_bundle(after, packet, now)), after.requester_site)]


def _sees_all(who: Principal) -> bool:
    return who.kind in ("operator", "system") or "regional-admin" in who.roles


def _may_read(who: Principal, task: TaskRow) -> None:
    if _sees_all(who) or who.site_id in (task.requester_site, task.owner_site):
        return
    raise NotFound(f"referral '{task.task_id}' does not exist")  # no hint that it does


def _fields(where: TaskFilter) -> dict[str, Any]:
    return {f: getattr(where, f) for f in where.__dataclass_fields__}


def _check_widths(**values: str | None) -> None:
    """What the store keeps in a column of fixed width (the department, the request id)."""
    for name, value in values.items():
        if value and len(value) > MAX_DEPARTMENT:
            raise InvalidInput(f"{name} must be at most {MAX_DEPARTMENT} characters",
                               field=name)


def _check_details(action: str, d: Details, rules: ReferralRules) -> None:
    """What each move needs from the person making it (checked before any write)."""
    if action == "accept" and not (d.appointment_start or d.admission_note):
        raise InvalidInput("accepting needs an appointment time or an admission note (or "
                           "both)", field="appointment_start")
    if action == "book" and d.appointment_start is None:
        raise InvalidInput("booking needs the appointment time", field="appointment_start")
    if d.appointment_start is not None and d.appointment_start.tzinfo is None:
        raise InvalidInput("the appointment time needs a time zone (e.g. "
                           "2026-12-01T09:30+08:00)", field="appointment_start")
    if action == "reject" and d.reason_code not in rules.reject_reasons:
        raise InvalidInput(f"rejecting needs a coded reason: one of "
                           f"{', '.join(rules.reject_reasons)}", field="reason_code")
    if action == "redirect" and not d.target_site:
        raise InvalidInput("redirecting needs the site to send the referral on to",
                           field="target_site")
    _check_widths(department=d.department)
    if action in ("note",) and not d.note.strip():
        raise InvalidInput("a note needs text", field="note")
    if action == "follow-up" and not (d.note.strip() or d.result_text.strip()):
        raise InvalidInput("a follow-up visit needs a note of what was found", field="note")
    if action == "complete":
        if d.result_resource is not None:
            kind = d.result_resource.get("resourceType")
            if kind not in ("DocumentReference", "DiagnosticReport") or not d.result_resource.get("id"):
                raise InvalidInput("the result must be a DocumentReference or DiagnosticReport "
                                   "with an id", field="result_resource")
            try:
                fhir.validated(d.result_resource, "the result")
            except InvalidInput as exc:
                raise InvalidInput(exc.message, field="result_resource") from None
        elif not d.result_text.strip():
            raise InvalidInput("completing needs the result: a consult note or discharge "
                               "summary text, or a FHIR DocumentReference/DiagnosticReport",
                               field="result_text")
        if d.result_kind not in ("consult-note", "discharge-summary"):
            raise InvalidInput("result kind must be consult-note or discharge-summary",
                               field="result_kind")
