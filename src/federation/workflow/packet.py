"""The clinical packet of a workflow task (a referral, a consult's case material): what
the receiving site needs to know about the patient, fetched from the origin node over
gRPC with a deadline (``NodeAgent.FetchPatientResourceBatches``).

The packet keeps the patient, every problem (Condition) and allergy, and the most recent
encounters, labs and vital signs, medications, imaging studies, reports and documents —
the summary a receiving clinician reads, not the whole history. It travels as a FHIR
Bundle (type ``collection``) behind the task's first message.

:class:`PacketJobs` is the job every workflow owes a new task: leased by one replica at a
time (:meth:`WorkflowStore.lease_jobs`), fetched with the deadline, retried with backoff
while the origin node is away, and queued behind the task in the transaction that
records it (:meth:`WorkflowStore.finish_job`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from federation.envelope import Envelope, validate_resource
from federation.errors import FederationError, NotFound, Unavailable
from federation.gateway.node_clients import NodeClients
from federation.store import GatewayStore
from federation.workflow.records import Message, TaskRow
from federation.workflow.store import WorkflowStore

__all__ = ["PACKET_TYPES", "RECENT", "PACKET_JOB", "select_recent", "fetch_packet",
           "PacketJobs"]

log = logging.getLogger("federation.workflow")

PACKET_JOB = "packet"
#: a packet the origin node could not give is asked for again after 2, 4, 8 … s (≤ 1 min)
PACKET_RETRY_MAX_S = 60
PACKET_LEASE = dt.timedelta(seconds=60)
#: packets assembled at once by one replica: mapping and validating a record is CPU work,
#: and interactive calls must not wait behind a backlog of packets
PACKET_CONCURRENCY = 2

PACKET_TYPES = ("Patient", "Encounter", "Condition", "Observation", "MedicationRequest",
                "AllergyIntolerance", "ImagingStudy", "DiagnosticReport", "DocumentReference")
#: the newest N of each type; types not named here are kept whole
RECENT = {"Encounter": 10, "Observation": 50, "MedicationRequest": 20, "ImagingStudy": 10,
          "DiagnosticReport": 20, "DocumentReference": 10}


#: worker threads of a workflow's packet jobs (store calls, FHIR validation)
PACKET_THREADS = 4
T = TypeVar("T")
#: runs a blocking call in a worker thread: ``asyncio.to_thread`` or a pool's
Run = Callable[..., Awaitable[Any]]


def _when(resource: dict[str, Any]) -> str:
    for path in (("period", "start"), ("effectiveDateTime",), ("issued",), ("authoredOn",),
                 ("started",), ("date",), ("recordedDate",)):
        node: Any = resource
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str):
            return node
    return ""


def select_recent(resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Patient first, then each type in :data:`PACKET_TYPES` order, newest first, cut
    to :data:`RECENT`."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r.get("resourceType", ""), []).append(r)
    out: list[dict[str, Any]] = []
    for kind in PACKET_TYPES:
        items = sorted(by_type.get(kind, []), key=_when, reverse=True)
        out.extend(items[:RECENT[kind]] if kind in RECENT else items)
    return out


async def fetch_packet(store: GatewayStore, clients: NodeClients, site_id: str,
                       patient_id: str, *, deadline_s: float,
                       purpose: str = "TREAT", run: Run = asyncio.to_thread
                       ) -> list[dict[str, Any]]:
    """The packet's clinical resources from ``site_id``'s node, each validated as FHIR
    R4 in a worker thread (not on the event loop; ``run`` chooses whose). Unavailable when
    the node is not online or misses the deadline; NotFound when it has no such patient."""
    node = await run(store.get_node, site_id)
    if node is None or node.state != "online":
        state = "has never registered" if node is None else f"is {node.state}"
        raise Unavailable(f"site {site_id}'s node {state}: the referral packet is read from "
                          "it, and follows the referral once the node is online")
    envelopes = [env async for env in clients.fetch(
        site_id, node.endpoint, patient_id, resource_types=list(PACKET_TYPES),
        correlation_id=uuid.uuid4().hex, purpose=purpose, timeout=deadline_s, validate=False)]
    found = await run(_validated, envelopes)
    if not any(r.get("resourceType") == "Patient" and r.get("id") == patient_id for r in found):
        raise NotFound(f"site {site_id} has no Patient/{patient_id}")
    return select_recent(found)


def _validated(envelopes: list[Envelope]) -> list[dict[str, Any]]:
    return [validate_resource(env) for env in envelopes]


#: the messages that carry a packet: (task after the job, the packet Bundle, now) → messages
Deliver = Callable[[TaskRow, dict[str, Any], dt.datetime], list[Message]]


class PacketJobs:
    """Assemble the packets a workflow's tasks are owed (``jobs=(PACKET_JOB,)`` at create)."""

    def __init__(self, store: GatewayStore, workflows: WorkflowStore, clients: Any, *,
                 workflow: str, deliver: Deliver, deadline_s: float,
                 bundle: Callable[[str, list[dict[str, Any]], dt.datetime], dict[str, Any]],
                 wake: Callable[[str], None], clock: Callable[[], dt.datetime]) -> None:
        self._store, self._workflows, self._clients = store, workflows, clients
        self._workflow, self._deliver, self._deadline = workflow, deliver, deadline_s
        self._bundle, self._wake, self._now = bundle, wake, clock
        #: set when this replica queued a packet job (others' jobs are found by polling)
        self.due = asyncio.Event()
        #: held while a packet is fetched: a preview waits its turn like a job
        self.assembling = asyncio.Semaphore(PACKET_CONCURRENCY)
        # threads of their own: in the loop's shared pool the jobs queued behind request
        # handlers waiting for SQLite's writer lock, and packets fell behind their
        # referrals under load (bench/README.md, referral delivery)
        self._pool = ThreadPoolExecutor(PACKET_THREADS, thread_name_prefix=f"{workflow}-packets")

    async def _run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(fn, *args, **kwargs))

    async def assemble(self, limit: int = 20) -> int:
        """Fetch the packet of every task that still needs one from its origin node and
        queue it; a failure is retried with backoff. Replicas lease jobs, so each packet
        is assembled by one of them."""
        leased = await self._run(self._workflows.lease_jobs, self._workflow, PACKET_JOB,
                                 self._now(), lease=PACKET_LEASE, limit=limit)
        if not leased:
            return 0
        done = await asyncio.gather(*(self._one(task_id, attempt)
                                      for task_id, attempt in leased))
        return sum(done)

    async def _one(self, task_id: str, attempt: int) -> bool:
        task = await self._run(self._workflows.get, task_id, self._workflow)
        try:
            async with self.assembling:
                clinical = await fetch_packet(self._store, self._clients, task.requester_site,
                                              task.patient_id, deadline_s=self._deadline,
                                              run=self._run)
        except FederationError as exc:
            delay = min(PACKET_RETRY_MAX_S, 2 ** attempt)
            level = logging.WARNING if attempt == 1 or attempt % 10 == 0 else logging.DEBUG
            log.log(level, "packet of %s %s from %s not assembled (attempt %d), retry in "
                    "%d s: %s", self._workflow, task_id, task.requester_site, attempt, delay,
                    exc.message)
            await self._run(self._workflows.fail_job, task_id, PACKET_JOB, exc.message,
                            self._now() + dt.timedelta(seconds=delay))
            return False
        now = self._now()
        packet = self._bundle(f"{task_id}-packet", clinical, now)
        row = await self._run(
            self._workflows.finish_job, task_id, PACKET_JOB, action="attach-packet", now=now,
            resources={"Packet": packet},
            messages=lambda after: self._deliver(after, packet, now),
            detail={"resources": len(clinical)})
        if row is not None:
            self._wake(row.owner_site)
        return row is not None
