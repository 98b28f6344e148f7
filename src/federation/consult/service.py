"""Remote consultation (远程会诊) on the gateway: request, claim and the other moves,
report and amend (signed), acknowledge, read, inbox, stream a study, escalate — for a
:class:`~federation.security.principal.Principal`, whatever transport brought them.

Requesting a consult: check the requester against the table and the pool against the
consortium's rules, require the patient's consent, resolve the patient to their EMPI
person, have the origin node describe each named study (objects, sizes, SHA-256 of each
object and chunk) — the manifests are kept with the consult, the material stays at the
origin — then store the Task with its ServiceRequest, Consent and manifests and queue the
request for the hub's node, in one transaction.

Every call, and every study fetch, writes one exchange-log row (patient as a hash).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from federation.consult import fhir
from federation.consult.moves import Details, builder, payload, row_of
from federation.consult.report import SignedReport, diagnostic_report, verify_report
from federation.consult.rules import ConsultRules
from federation.consult.sources import StudySources
from federation.consult.state import TABLE, ConsultState
from federation.consult.studies import Chunk, StudyManifest, StudyObject, check_chunk
from federation.errors import (
    FederationError,
    IntegrityError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    Unavailable,
    UnsupportedMediaType,
)
from federation.identity.index import RecordRef
from federation.identity.store import IdentityStore
from federation.referral.fhir import communication, consent
from federation.security.principal import SYSTEM, Principal
from federation.store import GatewayStore
from federation.store.models import WorkflowTask
from federation.workflow.exchange import log_call
from federation.workflow.packet import PACKET_JOB, PacketJobs
from federation.workflow.records import EventRow, Message, NewTask, TaskFilter, TaskRow
from federation.workflow.state import Actor, Party, parties_of
from federation.workflow.store import WorkflowStore
from federation.workflow.turnaround import Turnaround, turnaround

__all__ = ["ConsultService", "NewConsult", "ConsultView", "WORKFLOW", "MODES"]

WORKFLOW = "consult"
MODES = ("offline", "interactive")
CONSENT_METHODS = ("written", "verbal", "electronic")
PURPOSE = "COC"          # coordination of care (HL7 v3 ActReason)


@dataclass(frozen=True, slots=True)
class NewConsult:
    patient_id: str                       # the FHIR Patient id at the requester's site
    kind: str                             # imaging | ecg | pathology | ultrasound | case-discussion
    question: str
    mode: str = "offline"
    urgency: str = "routine"
    pool: str | None = None               # None: the first pool taking this kind
    reason: dict[str, str] = field(default_factory=dict)
    study_ids: tuple[str, ...] = ()
    consent_method: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConsultView:
    task: TaskRow
    resources: dict[str, dict[str, Any]]
    history: list[EventRow]
    allowed: list[str]

    @property
    def studies(self) -> list[StudyManifest]:
        return [StudyManifest.from_json(body) for name, body in sorted(self.resources.items())
                if name.startswith("Study:")]


class ConsultService:
    def __init__(self, store: GatewayStore, workflows: WorkflowStore, rules: ConsultRules, *,
                 identity: IdentityStore | None, clients: Any, ca_pem: bytes,
                 is_revoked: Callable[[str], object] | None = None,
                 deadline_s: float = 10.0, wake: Callable[[str], None] | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._store = store
        self._workflows = workflows
        self.rules = rules
        self._identity = identity
        self._sources = StudySources(store, clients, deadline_s)
        self._ca_pem = ca_pem
        self._is_revoked = is_revoked or (lambda serial: None)
        self._wake = wake or (lambda site: None)
        self._now = clock
        # the case material (the patient's recent record) follows the request, as a
        # referral's packet follows the referral: the same leased, retried job
        self._packets = PacketJobs(
            store, workflows, clients, workflow=WORKFLOW, deliver=_deliver_packet,
            deadline_s=deadline_s, bundle=fhir.bundle, wake=self._wake, clock=clock)

    # ------------------------------------------------------------------ request

    async def request(self, who: Principal, new: NewConsult) -> tuple[TaskRow, bool]:
        """Store and send a consult request; (task, False) for a repeated ``request_id``."""
        started = time.perf_counter()
        try:
            task, created = await self._request(who, new)
        except FederationError as exc:
            detail = exc.message.replace(new.patient_id, "<patient>") if new.patient_id \
                else exc.message
            await self._log(who, "Consults/Request", None, "error", exc.code, started,
                            detail=detail, patient=(who.site_id or "", new.patient_id)
                            if new.patient_id else None)
            raise
        await self._log(who, "Consults/Request", task.owner_site, "ok", "OK", started,
                        task_id=task.task_id, patient=(task.requester_site, task.patient_id),
                        detail=f"{new.kind} consult to pool {task.owner_department}")
        return task, created

    async def _request(self, who: Principal, new: NewConsult) -> tuple[TaskRow, bool]:
        if who.kind not in ("person", "node") or not who.site_id:
            raise PermissionDenied(f"{who.describe()} cannot request consults; staff do, "
                                   "with a person certificate or through their site's node")
        TABLE.transition(ConsultState.DRAFT, "create",
                         Actor(who.describe(), frozenset({Party.REQUESTER}), who.roles),
                         subject="a consult")
        pool = self.rules.pool_for(new.kind, new.pool)
        if new.mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}")
        if new.urgency not in self.rules.urgencies:
            raise InvalidInput(f"urgency must be one of {', '.join(self.rules.urgencies)}")
        if not new.patient_id:
            raise InvalidInput("a consult needs the patient's id at your site (patient_id)")
        if not new.question.strip():
            raise InvalidInput("a consult needs the question for the specialist")
        if pool.site_id == who.site_id:
            raise InvalidInput(f"pool {pool.pool_id} is at your own site; consult it locally")
        if new.consent_method not in CONSENT_METHODS:
            raise InvalidInput("the patient's consent to share their record with the hub is "
                               f"required: record it ({' | '.join(CONSENT_METHODS)}); "
                               "nothing was sent")
        if new.request_id:
            existing = await asyncio.to_thread(self._workflows.by_request_id, who.site_id,
                                               new.request_id)
            if existing is not None:
                return existing, False
        person_id = await self._person(who.site_id, new.patient_id)
        manifests = [await self._sources.describe(who.site_id, sid, new.patient_id)
                     for sid in dict.fromkeys(new.study_ids)]
        now = self._now()
        limits = self.rules.time_limits
        task = NewTask(
            task_id=f"con-{uuid.uuid4().hex[:16]}", workflow=WORKFLOW, category=new.kind,
            state=ConsultState.REQUESTED, requester_site=who.site_id,
            requester_user=who.user_id, owner_site=pool.site_id,
            owner_department=pool.pool_id, patient_id=new.patient_id, person_id=person_id,
            urgency=new.urgency, request_id=new.request_id,
            attributes={"mode": new.mode, "reason": new.reason,
                        "studies": [m.study_id for m in manifests]},
            ack_due_at=limits.acknowledge_due(new.urgency, now),
            complete_due_at=limits.complete_due(new.urgency, now))
        sr = fhir.validated(fhir.service_request(
            task.task_id, kind=new.kind, mode=new.mode, urgency=new.urgency, pool=pool,
            requester_site=who.site_id, requester_user=who.user_id,
            patient_id=new.patient_id, person_id=person_id, question=new.question,
            reason=new.reason, studies=[m.to_json() for m in manifests], authored=now),
            "the ServiceRequest")
        agreed = fhir.validated(consent(
            f"{task.task_id}-consent", site_id=who.site_id, patient_id=new.patient_id,
            person_id=person_id, target_site=pool.site_id, method=new.consent_method,
            recorded_by=who.user_id, when=now), "the Consent")
        resources = {"ServiceRequest": sr, "Consent": agreed,
                     **{f"Study:{m.study_id}": m.to_json() for m in manifests}}
        first = fhir.bundle(f"{task.task_id}-request",
                            [fhir.task_resource(row_of(task, now)), sr, agreed], now)
        message = Message(pool.site_id, "consult", "consult-request", payload(first),
                          who.site_id)
        stored, created = await asyncio.to_thread(
            self._workflows.create, task, resources, [message], actor=who, now=now,
            note=new.question, jobs=(PACKET_JOB,))
        if created:
            self._wake(pool.site_id)
            self._packets.due.set()
        return stored, created

    async def _person(self, site_id: str, patient_id: str) -> str:
        if self._identity is None:
            raise Unavailable("this gateway keeps no master patient index; consults need one")
        person = await asyncio.to_thread(self._identity.person_of,
                                         RecordRef(site_id, patient_id))
        if person is None:
            raise NotFound(f"Patient/{patient_id} at {site_id} is not (yet) in the master "
                           "patient index")
        return person

    async def assemble_packets(self, limit: int = 20) -> int:
        """Fetch and queue the case material consults are owed (:class:`PacketJobs`)."""
        return await self._packets.assemble(limit)

    @property
    def packets_due(self) -> asyncio.Event:
        return self._packets.due

    # ------------------------------------------------------------------ moves

    async def act(self, who: Principal, consult_id: str, action: str, d: Details, *,
                  expected_version: int | None = None) -> TaskRow:
        started = time.perf_counter()
        operation = f"Consults/{action}"
        try:
            if who.kind == "operator":
                raise PermissionDenied("operator certificates read consults; staff act on them")
            if action not in TABLE.actions:
                raise InvalidInput(f"'{action}' is not a consult action; actions are "
                                   f"{', '.join(a for a in TABLE.actions if a != 'create')}")
            if action in ("report", "amend", "create"):
                raise InvalidInput(f"'{action}' is not a move of Act: report and amend go "
                                   "through Report with a signed DiagnosticReport")
            row = await self._move(who, consult_id, action, d, expected_version)
        except FederationError as exc:
            await self._log(who, operation, None, "error", exc.code, started,
                            detail=exc.message, task_id=consult_id)
            raise
        await self._log(who, operation, row.owner_site, "ok", "OK", started,
                        task_id=consult_id, patient=(row.requester_site, row.patient_id),
                        detail=f"now {row.status}/{row.business_status}")
        return row

    async def _move(self, who: Principal, consult_id: str, action: str, d: Details,
                    expected_version: int | None) -> TaskRow:
        now = self._now()
        guard = (_slot_free(who.actor_id, d.slot_start)
                 if action == "schedule" and d.slot_start is not None else None)
        row = await asyncio.to_thread(
            self._workflows.act, consult_id, [(action, builder(action, who, d, now,
                                                               self.rules))],
            who, TABLE, workflow=WORKFLOW, now=now, expected_version=expected_version,
            subject=f"consult {consult_id}", guard=guard)
        self._wake(row.requester_site)
        self._wake(row.owner_site)
        return row

    async def report(self, who: Principal, consult_id: str, report: dict[str, Any],
                     signature: bytes, cert_pem: bytes, *, amend: bool = False,
                     expected_version: int | None = None) -> TaskRow:
        """Store a signed report (or an amendment) once its signature checks out: by a
        specialist's person certificate the consortium CA issued and has not revoked,
        held by the caller, over exactly this report about this consult's patient."""
        started = time.perf_counter()
        action = "amend" if amend else "report"
        try:
            if who.kind not in ("person", "node"):
                raise PermissionDenied("only the specialist who carries the consult reports")
            task = await self._reporting(who, consult_id, action)
            _check_report(task, report)
            signer = await asyncio.to_thread(verify_report, report, {}, self._ca_pem,
                                             signature=signature, cert_pem=cert_pem)
            if self._is_revoked(signer.serial):
                raise IntegrityError("the report was signed with a revoked certificate")
            if (signer.name, signer.site_id) != (who.user_id, who.site_id):
                raise PermissionDenied(f"the report is signed by {signer.name} at "
                                       f"{signer.site_id}; {who.describe()} must sign their "
                                       "own report")
            d = Details(signed=SignedReport(report, signature, cert_pem))
            row = await self._move(who, consult_id, action, d, expected_version)
        except FederationError as exc:
            await self._log(who, f"Consults/{action}", None, "error", exc.code, started,
                            detail=exc.message, task_id=consult_id)
            raise
        await self._log(who, f"Consults/{action}", row.requester_site, "ok", "OK", started,
                        task_id=consult_id, patient=(row.requester_site, row.patient_id),
                        detail=f"{row.attributes.get('report')} signed by {who.actor_id}")
        return row

    async def _reporting(self, who: Principal, consult_id: str, action: str) -> TaskRow:
        """The consult, once the table says ``who`` may ``action`` (report | amend) it
        now — before any signature is looked at."""
        task = await asyncio.to_thread(self._workflows.get, consult_id, WORKFLOW)
        self._may_read(who, task)
        TABLE.transition(task.state(ConsultState), action, Actor(
            who.describe(), parties_of(who.kind, who.site_id, who.roles,
                                       requester_site=task.requester_site,
                                       owner_site=task.owner_site, actor_id=who.actor_id,
                                       assignee=task.assignee), who.roles),
            subject=f"consult {consult_id}")
        return task

    async def draft_report(self, who: Principal, consult_id: str, conclusion: str,
                           codes: Sequence[Mapping[str, str]], *, amend: bool = False
                           ) -> dict[str, Any]:
        """The next version of the consult's report, exactly as :meth:`report` will take
        it once ``who`` has signed it on their side (a browser has no copy of
        :func:`diagnostic_report`): its id, status, subject, author and, for an
        amendment, the version it replaces. Nothing is stored; the read is logged."""
        started = time.perf_counter()
        action = "amend" if amend else "report"
        try:
            if who.kind != "person" or not who.site_id:
                raise PermissionDenied("a report is drafted for the specialist who signs it "
                                       "with their own person certificate")
            task = await self._reporting(who, consult_id, action)
            done = len(task.attributes.get("reports", []))
            if not amend and done:
                raise InvalidInput(f"consult {consult_id} has a report; amend it instead")
            n = done + 1
            report = diagnostic_report(
                consult_id, n, kind=task.category, conclusion=conclusion, codes=codes,
                author_site=who.site_id, author_user=who.user_id,
                subject=fhir.task_resource(task)["for"], issued=self._now(),
                replaces=f"{consult_id}-r{n - 1}" if n > 1 else None)
            _check_report(task, report)
        except FederationError as exc:
            await self._log(who, "Consults/ReportDraft", None, "error", exc.code, started,
                            detail=exc.message, task_id=consult_id)
            raise
        await self._log(who, "Consults/ReportDraft", task.owner_site, "ok", "OK", started,
                        task_id=consult_id, patient=(task.requester_site, task.patient_id),
                        detail=f"draft of {report['id']}", records=1)
        return report

    # ------------------------------------------------------------------ studies

    async def fetch_study(self, who: Principal, consult_id: str, study_id: str, name: str,
                          offset: int, *, check: Callable[[StudyObject], None] | None = None,
                          operation: str = "Consults/FetchStudy") -> AsyncIterator[Chunk]:
        """Relay one object of a study from the origin node, chunk by chunk, each checked
        against the manifest recorded at request time (never buffered whole). ``check``
        may refuse the object (by its manifest entry) once the caller may fetch it and
        before anything is asked of the origin; ``operation`` names the exchange-log row."""
        started = time.perf_counter()
        sent, task = 0, None
        try:
            task = await asyncio.to_thread(self._workflows.get, consult_id, WORKFLOW)
            self._may_fetch(who, task)
            body = (await asyncio.to_thread(self._workflows.resources_named, [consult_id],
                                            f"Study:{study_id}")).get(consult_id)
            if body is None:
                raise NotFound(f"consult {consult_id} names no study '{study_id}'")
            obj = StudyManifest.from_json(body).object(name)
            if check is not None:
                check(obj)
            if offset % obj.chunk_size or offset > obj.size:
                raise InvalidInput(f"offset must be a multiple of {obj.chunk_size} within "
                                   f"{obj.size} bytes")
            async for chunk in self._relay(task.requester_site, study_id, obj, offset):
                yield chunk
                sent += len(chunk.data)
        except FederationError as exc:
            await self._log(who, operation, task.requester_site if task else None,
                            "error", exc.code, started, detail=exc.message, task_id=consult_id,
                            records=sent)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # the reader went away mid-stream (a cut connection): still one row, saying
            # how far it got — it resumes from there
            await asyncio.shield(self._log(
                who, operation, task.requester_site if task else None, "error",
                "cancelled", started, task_id=consult_id, records=sent,
                detail=f"study {study_id} object {name}: the reader stopped after bytes "
                       f"{offset}-{offset + sent}"))
            raise
        await self._log(who, operation, task.requester_site, "ok", "OK", started,
                        task_id=consult_id, patient=(task.requester_site, task.patient_id),
                        detail=f"study {study_id} object {name} bytes {offset}-{offset + sent}",
                        records=sent)

    async def read_whole(self, who: Principal, consult_id: str, study_id: str, name: str, *,
                         max_bytes: int, types: Collection[str] | None = None,
                         operation: str = "Consults/ViewStudy") -> tuple[StudyObject, bytes]:
        """One object whole, for the gateway to render it: relayed as by
        :meth:`fetch_study` (same access check, one exchange-log row named
        ``operation``), refused before it is fetched when its recorded size is over
        ``max_bytes`` or its type not one of ``types``, and returned only once the whole
        object's SHA-256 matches the manifest's — the chunks were checked on the way.
        Someone at a site not party to the consult learns nothing of it (NotFound), as
        from :meth:`view`; the attempt is still logged."""
        started = time.perf_counter()
        try:
            self._may_read(who, await asyncio.to_thread(self._workflows.get, consult_id,
                                                        WORKFLOW))
        except FederationError as exc:
            await self._log(who, operation, None, "error", exc.code, started,
                            detail=exc.message, task_id=consult_id)
            raise
        held: list[StudyObject] = []

        def admit(obj: StudyObject) -> None:
            if types is not None and obj.content_type not in types:
                raise UnsupportedMediaType(
                    f"{name} is {obj.content_type}, which cannot be viewed; viewable are "
                    f"{', '.join(types)}. Download the object itself instead")
            if obj.size > max_bytes:
                raise PayloadTooLarge(
                    f"{name} is {obj.size} bytes, over the {max_bytes}-byte limit of what "
                    "the gateway renders; download the object itself instead")
            held.append(obj)

        parts = [c.data async for c in self.fetch_study(who, consult_id, study_id, name, 0,
                                                        check=admit, operation=operation)]
        data = b"".join(parts)
        if hashlib.sha256(data).hexdigest() != held[0].sha256:
            exc = IntegrityError(f"{name} as relayed does not match the SHA-256 recorded at "
                                 "the origin; it was not shown")
            await self._log(who, operation, None, "error", exc.code, started,
                            detail=exc.message, task_id=consult_id)
            raise exc
        return held[0], data

    async def _relay(self, site_id: str, study_id: str, obj: StudyObject,
                     offset: int) -> AsyncIterator[Chunk]:
        async for chunk in self._sources.read(site_id, study_id, obj, offset):
            check_chunk(obj, chunk, f"the gateway, reading from {site_id}")
            yield chunk

    def _may_fetch(self, who: Principal, task: TaskRow) -> None:
        pool = self.rules.pool(task.owner_department or "")
        if who.actor_id == task.assignee or pool.admits(who.site_id, who.user_id, who.roles) \
                or (who.site_id == task.requester_site and who.kind in ("person", "node")):
            return
        raise PermissionDenied(f"{who.describe()} may not read the studies of consult "
                               f"{task.task_id}: its pool's specialists and the requesting "
                               "site may")

    # ------------------------------------------------------------------ time limits

    async def escalate(self) -> list[TaskRow]:
        """Escalate every consult no one claimed within its time limit (once each)."""
        now = self._now()
        done = await asyncio.to_thread(self._workflows.escalate_overdue, WORKFLOW, now,
                                       lambda row: self._escalation_notices(row, now))
        for row in done:
            self._wake(row.owner_site)
            self._wake(row.requester_site)
            await self._log(SYSTEM, "Consults/escalate", row.owner_site, "ok", "OK",
                            time.perf_counter(), task_id=row.task_id,
                            patient=(row.requester_site, row.patient_id),
                            detail=f"unclaimed past {fhir.iso(row.ack_due_at)}")
        return done

    def _escalation_notices(self, row: TaskRow, now: dt.datetime
                            ) -> list[tuple[str, str, Message | None]]:
        reason = (f"{row.urgency} {row.category} consult {row.task_id} from "
                  f"{row.requester_site} to pool {row.owner_department} was not claimed by "
                  f"{fhir.iso(row.ack_due_at)}")
        out: list[tuple[str, str, Message | None]] = []
        for audience in self.rules.time_limits.notify:
            if audience == "regional-admin":
                out.append(("regional-admin", reason, None))
                continue
            site = row.owner_site if audience == "owner-site" else row.requester_site
            comm = communication(f"{row.task_id}-esc-{audience}", row, text=reason,
                                 sender_site=None, recipient_site=site, when=now, alert=True)
            out.append((f"site:{site}", reason, Message(site, "notice", "escalation",
                                                        payload(comm))))
        return out

    # ------------------------------------------------------------------ reading

    async def read(self, who: Principal, consult_id: str) -> ConsultView:
        """:meth:`view`, recorded in the exchange log as one read across sites (for gRPC
        callers; the HTTP routes log their own reads)."""
        started = time.perf_counter()
        try:
            view = await self.view(who, consult_id)
        except FederationError as exc:
            outcome = "refused" if isinstance(exc, PermissionDenied) else "error"
            await self._log(who, "Consults/Get", None, outcome, exc.code, started,
                            detail=exc.message, task_id=consult_id)
            raise
        task = view.task
        await self._log(who, "Consults/Get", task.owner_site, "ok", "OK", started,
                        task_id=consult_id, patient=(task.requester_site, task.patient_id),
                        records=1)
        return view

    async def view(self, who: Principal, consult_id: str) -> ConsultView:
        task = await asyncio.to_thread(self._workflows.get, consult_id, WORKFLOW)
        self._may_read(who, task)
        resources = await asyncio.to_thread(self._workflows.resources, consult_id)
        history = await asyncio.to_thread(self._workflows.history, consult_id)
        return ConsultView(task, resources, history, TABLE.allowed(task.state(ConsultState)))

    def _may_read(self, who: Principal, task: TaskRow) -> None:
        if _sees_all(who) or who.site_id in (task.requester_site, task.owner_site):
            return
        raise NotFound(f"consult '{task.task_id}' does not exist")  # no hint that it does

    async def inbox(self, who: Principal, *, statuses: tuple[str, ...] = (), mine: bool = False,
                    offset: int = 0, limit: int = 20) -> tuple[list[TaskRow], int]:
        """A specialist's inbox: their pools' consults (``mine``: those they hold); a
        requester's: their site's; a regional administrator's: all."""
        where = TaskFilter(statuses=statuses)
        if mine:
            where = TaskFilter(statuses=statuses, assignees=(who.actor_id,))
        elif not _sees_all(who):
            pools = tuple(p.pool_id for p in self.rules.pools
                          if p.admits(who.site_id, who.user_id, who.roles))
            where = (TaskFilter(statuses=statuses, owner_departments=pools) if pools
                     else TaskFilter(statuses=statuses, involving_site=who.site_id))
        return await asyncio.to_thread(self._workflows.search, WORKFLOW, where, offset=offset,
                                       limit=limit, sort="-updated")

    async def turnaround(self, since: dt.datetime | None = None) -> list[Turnaround]:
        """Per hub site and pool: minutes to claim, hours to report and to close."""
        rows = await asyncio.to_thread(self._workflows.all_tasks, WORKFLOW, since)
        return turnaround(rows, self._now())

    async def alerts(self, who: Principal, limit: int = 100) -> list[Any]:
        audience = None if _sees_all(who) else f"site:{who.site_id}"
        found = await asyncio.to_thread(self._workflows.notices, audience=audience,
                                        limit=limit * 4)
        ids = {n.task_id for n in found}
        rows, _ = await asyncio.to_thread(self._workflows.search, WORKFLOW,
                                          TaskFilter(task_ids=tuple(ids)), limit=len(ids) or 1)
        mine = {r.task_id for r in rows}
        return [n for n in found if n.task_id in mine][:limit]

    # ------------------------------------------------------------------ exchange log

    async def _log(self, who: Principal, operation: str, target: str | None, outcome: str,
                   code: str, started: float, *, detail: str = "", task_id: str | None = None,
                   patient: tuple[str, str] | None = None, records: int = 0) -> None:
        await log_call(self._store, who, operation, now=self._now(), started=started,
                       target=target, outcome=outcome, code=code, purpose=PURPOSE,
                       detail=detail, task_id=task_id, patient=patient, records=records)



def _deliver_packet(after: TaskRow, packet: dict[str, Any], now: dt.datetime) -> list[Message]:
    """The case material follows the request to the hub: the Task and the record."""
    entries = [e["resource"] for e in packet.get("entry", [])]
    material = fhir.bundle(f"{after.task_id}-packet", [fhir.task_resource(after), *entries],
                           now)
    return [Message(after.owner_site, "consult", "packet", payload(material),
                    after.requester_site)]


def _sees_all(who: Principal) -> bool:
    return who.kind in ("operator", "system") or "regional-admin" in who.roles


def _check_report(task: TaskRow, report: dict[str, Any]) -> None:
    if report.get("resourceType") != "DiagnosticReport":
        raise InvalidInput("the report must be a FHIR DiagnosticReport")
    fhir.validated(report, "the report")
    if {"reference": f"ServiceRequest/{task.task_id}"} not in report.get("basedOn", []):
        raise InvalidInput(f"the report must be basedOn ServiceRequest/{task.task_id}")
    if report.get("subject", {}).get("reference") != f"Patient/{task.patient_id}":
        raise InvalidInput("the report's subject is not this consult's patient")
    if not str(report.get("conclusion", "")).strip():
        raise InvalidInput("the report needs its conclusion text")


def _slot_free(specialist: str, start: dt.datetime) -> Callable[[Session, TaskRow], None]:
    """A check, inside the booking's transaction, that the specialist has no other session
    in that slot. On PostgreSQL a lock per specialist makes two bookings at once take turns
    (the second sees the first); SQLite's single writer already does."""
    taken = fhir.iso(start)
    key = int.from_bytes(hashlib.sha256(f"consult-slot:{specialist}".encode()).digest()[:8],
                         "big", signed=True)

    def check(s: Session, task: TaskRow) -> None:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        booked = s.exec(select(WorkflowTask).where(
            WorkflowTask.workflow == WORKFLOW, WorkflowTask.assignee == specialist,
            WorkflowTask.business_status == "scheduled",
            WorkflowTask.task_id != task.task_id)).all()
        for other in booked:
            if TaskRow.of(other).attributes.get("appointment_start") == taken:
                raise InvalidInput(f"you already have a session at {taken} (consult "
                                   f"{other.task_id}); choose another slot")
    return check
