"""Research export: FHIR Bulk Data ``$export`` jobs of a de-identified cohort.

Bulk Data Access IG v2 (https://hl7.org/fhir/uv/bulkdata/export.html): the kick-off
answers ``202 Accepted`` with ``Content-Location`` = the job's status URL; polling it
answers ``202`` (with ``X-Progress`` and ``Retry-After``) while the job runs, then ``200``
with the manifest (``transactionTime``, ``request``, ``requiresAccessToken``, ``output``
= one NDJSON file URL per resource type with its count, ``error``); ``DELETE`` cancels.

Jobs live in the store (``export_job``, ``export_file``), so any replica answers status
and serves files, and a job survives the replica that started it: a runner *claims* a job
with a conditional UPDATE (``accepted``, or ``running`` with a lapsed lease → ``running``
with its own lease), which only one replica can win on SQLite or PostgreSQL, renews the
lease while it works, and a job whose runner died is taken over when its lease lapses.

The cohort (kick-off parameters, our extension since Bulk Data defines no cohort
language without a Group): ``cohort-condition`` = an ICD-10 code or prefix (``C34``
matches ``C34.9``), optionally ``system|code``; ``cohort-site`` = a site id; both AND.
``_type`` limits the resource types. Only replicated sites' records are exported (a
federate-mode site keeps its records; the manifest's ``error`` names such sites).
Every resource goes through :class:`~federation.archive.deid.Deidentifier`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import col, select

from federation.archive.deid import Deidentifier
from federation.archive.people import PersonDirectory
from federation.archive.store import ArchiveStore
from federation.errors import Conflict, FederationError, InvalidInput, NotFound
from federation.store.gateway_store import StoreSessions
from federation.store.models import ExportFile, ExportJob

__all__ = ["EXPORT_TYPES", "ExportRequest", "ExportRunner", "ExportStore", "JobView"]

log = logging.getLogger("federation.archive.export")
EXPORT_TYPES = ("Patient", "Encounter", "Condition", "Observation", "DiagnosticReport",
                "MedicationRequest", "AllergyIntolerance", "ImagingStudy")
LEASE = dt.timedelta(seconds=30)
PART_LINES = 10_000


@dataclass(frozen=True, slots=True)
class ExportRequest:
    condition: str | None
    site: str | None
    types: tuple[str, ...]
    request_url: str

    @classmethod
    def parse(cls, params: list[tuple[str, str]], known_sites: set[str], request_url: str
              ) -> ExportRequest:
        allowed = {"cohort-condition", "cohort-site", "_type", "_outputFormat"}
        bad = sorted({k for k, _ in params if k not in allowed})
        if bad:
            raise InvalidInput(f"unsupported $export parameters: {', '.join(bad)}; supported: "
                               f"{', '.join(sorted(allowed))}")
        values = dict(params)
        fmt = values.get("_outputFormat")
        if fmt not in (None, "application/fhir+ndjson", "application/ndjson", "ndjson"):
            raise InvalidInput("_outputFormat must be application/fhir+ndjson")
        types = tuple(t for t in (values.get("_type") or ",".join(EXPORT_TYPES)).split(",") if t)
        unknown = [t for t in types if t not in EXPORT_TYPES]
        if unknown or not types:
            raise InvalidInput(f"_type may name {', '.join(EXPORT_TYPES)}; not "
                               f"{', '.join(unknown) or '(nothing)'}")
        site = values.get("cohort-site")
        if site is not None and site not in known_sites:
            raise InvalidInput(f"cohort-site {site!r} is not a member site")
        condition = values.get("cohort-condition")
        if condition is not None and not (0 < len(condition) <= 64):
            raise InvalidInput("cohort-condition must be an ICD-10 code or prefix")
        if condition is None and site is None:
            raise InvalidInput("name a cohort: cohort-condition and/or cohort-site")
        return cls(condition, site, types, request_url)


@dataclass(frozen=True, slots=True)
class JobView:
    job_id: str
    status: str
    requested_by: str
    request: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    error: str
    output: list[dict[str, Any]]

    @classmethod
    def of(cls, m: ExportJob) -> JobView:
        return cls(m.job_id, m.status, m.requested_by, json.loads(m.request), m.created_at,
                   m.updated_at, m.error, json.loads(m.output))


class ExportStore(StoreSessions):
    def create(self, req: ExportRequest, *, requested_by: str, site: str,
               now: dt.datetime) -> str:
        job_id = uuid.uuid4().hex
        with self._write() as s:
            s.add(ExportJob(job_id=job_id, status="accepted", requested_by=requested_by[:200],
                            requester_site=site, created_at=now, updated_at=now,
                            request=json.dumps({"condition": req.condition, "site": req.site,
                                                "types": list(req.types),
                                                "url": req.request_url})))
        return job_id

    def get(self, job_id: str) -> JobView:
        with self._read() as s:
            row = s.get(ExportJob, job_id)
            if row is None:
                raise NotFound(f"export job {job_id} does not exist")
            return JobView.of(row)

    def claim(self, owner: str, now: dt.datetime) -> JobView | None:
        """Take one job to run (see the module docstring), or None."""
        with self._read() as s:
            candidates = s.exec(select(ExportJob.job_id).where(or_(
                col(ExportJob.status) == "accepted",
                (col(ExportJob.status) == "running") & (col(ExportJob.lease_until) < now)))
                .order_by(col(ExportJob.created_at)).limit(5)).all()
        for job_id in candidates:
            with self._write() as s:
                won = s.execute(update(ExportJob).where(
                    col(ExportJob.job_id) == job_id,
                    or_(col(ExportJob.status) == "accepted",
                        (col(ExportJob.status) == "running")
                        & (col(ExportJob.lease_until) < now)))
                    .values(status="running", lease_owner=owner, lease_until=now + LEASE,
                            attempts=ExportJob.attempts + 1, updated_at=now)).rowcount
            if won == 1:
                return self.get(job_id)
        return None

    def renew(self, job_id: str, owner: str, now: dt.datetime) -> bool:
        with self._write() as s:
            return s.execute(update(ExportJob).where(
                col(ExportJob.job_id) == job_id, col(ExportJob.lease_owner) == owner,
                col(ExportJob.status) == "running")
                .values(lease_until=now + LEASE, updated_at=now)).rowcount == 1

    def finish(self, job_id: str, owner: str, files: dict[str, list[bytes]],
               errors: list[str], now: dt.datetime) -> bool:
        """Store the files and complete the job, if this runner still holds it."""
        with self._write() as s:
            job = s.get(ExportJob, job_id, with_for_update=True)
            if job is None or job.lease_owner != owner or job.status != "running":
                return False
            s.execute(ExportFile.__table__.delete().where(
                ExportFile.__table__.c.job_id == job_id))
            output = []
            for rtype, lines in sorted(files.items()):
                for part, start in enumerate(range(0, len(lines), PART_LINES)):
                    chunk = lines[start:start + PART_LINES]
                    s.add(ExportFile(job_id=job_id, resource_type=rtype, part=part,
                                     count=len(chunk), body=b"\n".join(chunk) + b"\n"))
                    output.append({"type": rtype, "part": part, "count": len(chunk)})
            job.status, job.updated_at, job.lease_until = "completed", now, None
            job.output = json.dumps(output)
            job.error = json.dumps(errors)[:500]
            s.add(job)
            return True

    def fail(self, job_id: str, message: str, now: dt.datetime) -> None:
        with self._write() as s:
            s.execute(update(ExportJob).where(col(ExportJob.job_id) == job_id).values(
                status="failed", error=message[:500], updated_at=now, lease_until=None))

    def cancel(self, job_id: str, now: dt.datetime) -> None:
        with self._write() as s:
            job = s.get(ExportJob, job_id)
            if job is None:
                raise NotFound(f"export job {job_id} does not exist")
            if job.status in ("cancelled",):
                raise Conflict(f"export job {job_id} is already cancelled")
            s.execute(ExportFile.__table__.delete().where(
                ExportFile.__table__.c.job_id == job_id))
            job.status, job.updated_at, job.lease_until = "cancelled", now, None
            s.add(job)

    def file(self, job_id: str, resource_type: str, part: int) -> bytes:
        with self._read() as s:
            row = s.get(ExportFile, (job_id, resource_type, part))
            if row is None:
                raise NotFound(f"export job {job_id} has no {resource_type} file {part}")
            return bytes(row.body)


class ExportRunner:
    """Runs claimed jobs in the background of a gateway (one at a time per replica)."""

    def __init__(self, jobs: ExportStore, archive: ArchiveStore, people: PersonDirectory,
                 deid: Deidentifier, modes: dict[str, str], *, poll_s: float = 1.0) -> None:
        self.jobs, self._archive, self._people, self._deid = jobs, archive, people, deid
        self._modes = modes
        self._poll = poll_s
        self.owner = uuid.uuid4().hex
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                job = await asyncio.to_thread(self.jobs.claim, self.owner, _now())
            except FederationError as exc:  # the store is away: try again later
                log.warning("export runner cannot claim jobs: %s", exc.message)
                job = None
            if job is not None:
                await self.run_job(job)
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            except TimeoutError:
                pass

    async def run_job(self, job: JobView) -> None:
        try:
            files, errors = await asyncio.to_thread(self.build, job)
            done = await asyncio.to_thread(self.jobs.finish, job.job_id, self.owner, files,
                                           errors, _now())
            log.info("export job %s %s", job.job_id, "completed" if done else "was taken over")
        except Exception as exc:  # a job fails visibly; the runner carries on
            log.exception("export job %s failed", job.job_id)
            await asyncio.to_thread(self.jobs.fail, job.job_id,
                                    f"{type(exc).__name__}: the export could not be built",
                                    _now())

    def cohort(self, condition: str | None, site: str | None) -> list[str]:
        """EMPI person ids in the cohort."""
        persons: set[str] | None = None
        if condition is not None:
            system, _, code = condition.rpartition("|")
            found = set()
            for row in self._archive.of_type("Condition", site):
                data = json.loads(row.body)
                for c in (data.get("code") or {}).get("coding") or []:
                    if (not system or c.get("system") == system) and \
                            str(c.get("code", "")).startswith(code):
                        if row.patient_id and (p := self._people.person_of(row.site_id,
                                                                           row.patient_id)):
                            found.add(p)
                        break
            persons = found
        if site is not None:
            at_site = {p for row in self._archive.of_type("Patient", site)
                       if (p := self._people.person_of(site, row.resource_id))}
            persons = at_site if persons is None else persons & at_site
        return sorted(persons or ())

    def build(self, job: JobView) -> tuple[dict[str, list[bytes]], list[str]]:
        req = job.request
        types = set(req["types"])
        files: dict[str, list[bytes]] = defaultdict(list)
        skipped: set[str] = set()
        for n, person in enumerate(self.cohort(req.get("condition"), req.get("site"))):
            if n % 50 == 0 and not self.jobs.renew(job.job_id, self.owner, _now()):
                raise RuntimeError("lost the job's lease")
            refs = self._people.records_of(person)
            skipped |= {s for s, _ in refs if self._modes.get(s, "replicate") != "replicate"}
            refs = [r for r in refs if self._modes.get(r[0], "replicate") == "replicate"]
            patient_ids = {pid for _, pid in refs}
            seen_patient = False
            for row in self._archive.person_resources(refs, sorted(types)):
                if row.resource_type == "Patient":
                    if seen_patient:
                        continue                     # one Patient per person
                    seen_patient = True
                clean = self._deid.resource(row.site_id, json.loads(row.body), person,
                                            patient_ids)
                files[row.resource_type].append(
                    json.dumps(clean, ensure_ascii=False, separators=(",", ":")).encode())
        errors = [f"site {s} is in federate mode: its records stay at the site and are not "
                  "in this export" for s in sorted(skipped)]
        return dict(files), errors


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
