"""Pull each site's change feed into the archive: full history once, then increments.

:class:`FeedPuller` runs in the gateway. A pull of one site streams
``NodeAgent.StreamChanges`` after the site's stored cursor and stores batch by batch
(:meth:`ArchiveStore.apply`: rows and cursor in one transaction), so an interrupted pull
loses nothing and the next one resumes. Pulls happen

* when a node registers (it may have changed while the gateway was away),
* when a node says its feed moved (``Gateway.NotifyChanges``), and
* on a schedule, for every online node (a lost notice costs at most one interval).

Pulls of one site never overlap (a lock per site); pulls of different sites run in
parallel, a few at a time. Each change is checked before it is stored: valid FHIR R4 of
the type and id it claims, ``meta.source`` naming the site it came from. A change that
fails is counted as rejected (ids only in the log) and skipped; the cursor moves past it
so one bad record cannot stall a site's feed. Every pull writes one exchange-log row.

Sites in ``federate`` archive mode (:data:`federation.settings.ARCHIVE_MODES`) keep their
clinical records at the site: of their feed only Patients are stored (the EMPI needs
them to link persons); everything else passes through to ``on_changes`` (critical-result
alerts) and is dropped. ``on_changes(site_id, changes)`` sees every checked change of
every batch after it is stored; its failures are logged, never fatal to the pull.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from federation.archive.store import ArchiveStore, StoredChange
from federation.envelope import Envelope, patient_of, validate_resource
from federation.errors import FederationError, InvalidInput
from federation.fhir_systems import site_urn
from federation.gateway.node_clients import NodeClients
from federation.rpc.metrics import EXCHANGES
from federation.store import ExchangeEntry, GatewayStore

__all__ = ["FeedPuller", "PullResult", "check_change"]

log = logging.getLogger("federation.archive.sync")
OPERATION = "NodeAgent/StreamChanges"


@dataclass(frozen=True, slots=True)
class PullResult:
    site_id: str
    epoch: str
    after: int
    head: int
    stored: int
    rejected: int
    reset: bool
    elapsed_ms: float


def check_change(site_id: str, resource_type: str, resource_id: str, body: bytes,
                 *, validate: bool = True) -> str | None:
    """Check one changed resource from ``site_id``; returns the id of the Patient it is
    about (None for a Patient). Raises :class:`InvalidInput` (ids only) when it is not
    valid FHIR of that type and id, or claims to come from another site."""
    env = Envelope(resource_type=resource_type, id=resource_id, site_id=site_id, json=body)
    data = validate_resource(env) if validate else _parsed(env)
    source = (data.get("meta") or {}).get("source")
    if source != site_urn(site_id):
        raise InvalidInput(f"{resource_type}/{resource_id} from site {site_id} says it comes "
                           f"from {source!r}")
    return patient_of(resource_type, data)


def _parsed(env: Envelope) -> dict[str, Any]:
    try:
        data = json.loads(env.json)
    except ValueError:
        raise InvalidInput(f"{env.resource_type}/{env.id} is not JSON") from None
    if not isinstance(data, dict) or data.get("resourceType") != env.resource_type \
            or data.get("id") != env.id:
        raise InvalidInput(f"{env.resource_type}/{env.id} does not hold that resource")
    return data


class FeedPuller:
    def __init__(self, store: GatewayStore, archive: ArchiveStore, clients: NodeClients, *,
                 interval_s: float, deadline_s: float = 600.0, batch: int = 500,
                 parallel: int = 3, validate: bool = True,
                 modes: dict[str, str] | None = None,
                 on_changes: Callable[[str, list[StoredChange]], Awaitable[None]] | None = None
                 ) -> None:
        self._store, self._archive, self._clients = store, archive, clients
        self._modes = modes or {}
        self._on_changes = on_changes
        self._interval, self._deadline, self._batch = interval_s, deadline_s, batch
        self._validate = validate
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(parallel)

    def request(self, site_id: str) -> bool:
        """Pull ``site_id`` soon; False when a pull of it was already waiting."""
        fresh = site_id not in self._pending
        self._pending.add(site_id)
        self._wake.set()
        return fresh

    async def run(self, stop: asyncio.Event) -> None:
        """Pull what is requested as it is requested, and every online site each interval."""
        next_round = time.monotonic()
        while not stop.is_set():
            timeout = max(0.0, next_round - time.monotonic())
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stop.is_set():
                return
            self._wake.clear()
            sites, self._pending = set(self._pending), set()
            if time.monotonic() >= next_round:
                sites |= {n.site_id for n in await asyncio.to_thread(self._store.list_nodes)
                          if n.state == "online"}
                next_round = time.monotonic() + self._interval
            await asyncio.gather(*(self._guarded(s) for s in sorted(sites)))

    async def _guarded(self, site_id: str) -> None:
        try:
            await self.pull(site_id)
        except FederationError as exc:
            log.warning("change feed pull from %s failed: %s", site_id, exc.message)

    async def pull(self, site_id: str, *, replay_from: int | None = None) -> PullResult:
        """Read the site's feed after the stored cursor up to the node's head, storing
        each batch as it arrives; see the module docstring. ``replay_from`` re-reads from
        an earlier cursor instead (what is already stored is left as it is)."""
        node = await asyncio.to_thread(self._store.get_node, site_id)
        if node is None or node.state != "online":
            state = "never registered" if node is None else node.state
            raise FederationError(f"site {site_id} cannot be pulled: its node is {state}")
        lock = self._locks.setdefault(site_id, asyncio.Lock())
        async with self._slots, lock:
            return await self._pull(site_id, node.endpoint, replay_from)

    async def _pull(self, site_id: str, endpoint: str, replay_from: int | None) -> PullResult:
        started = time.perf_counter()
        cursor = await asyncio.to_thread(self._archive.cursor, site_id)
        epoch, after = (cursor.epoch, cursor.after) if cursor else ("", 0)
        if replay_from is not None:
            after = min(after, max(0, replay_from))
        stored = rejected = 0
        head, reset = after, False
        status, outcome, detail = "OK", "ok", ""
        try:
            async for batch in self._clients.stream_changes(
                    site_id, endpoint, epoch=epoch, after=after, max_batch=self._batch,
                    timeout=self._deadline):
                if batch.reset and batch.epoch != epoch:
                    reset, epoch, after = True, batch.epoch, 0
                    log.info("site %s started a new change feed epoch: re-reading it whole",
                             site_id)
                head = batch.head
                changes, bad = await asyncio.to_thread(self._checked, site_id, batch.changes)
                last = batch.changes[-1].seq if batch.changes else after
                kept = changes if self._modes.get(site_id, "replicate") == "replicate" else [
                    c for c in changes if c.resource_type == "Patient"]
                stored += await asyncio.to_thread(
                    self._archive.apply, site_id, epoch, kept, after=last, node_head=head,
                    rejected=bad, now=dt.datetime.now(dt.UTC), caught_up=last >= head)
                await self._notify(site_id, changes)
                rejected += bad
                after = last
            if reset and after >= head:
                dropped = await asyncio.to_thread(self._archive.drop_other_epochs, site_id, epoch)
                log.info("site %s: %d resources of the previous feed epoch removed",
                         site_id, dropped)
            await asyncio.to_thread(self._archive.count_pull, site_id)
        except FederationError as exc:
            status, outcome, detail = exc.code, "error", exc.message
            raise
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            EXCHANGES.labels(OPERATION, site_id, outcome).inc()
            await asyncio.to_thread(self._store.log_exchange, ExchangeEntry(
                at=dt.datetime.now(dt.UTC), correlation_id=f"feed-{site_id}-{after}",
                requester_kind="gateway", requester_id="change-feed", requester_site=None,
                target_site=site_id, operation=OPERATION, purpose=None, patient_ref=None,
                outcome=outcome, status_code=status,
                detail=(detail or f"cursor {after} of head {head}; {rejected} rejected")[:500],
                records=stored, duration_ms=elapsed))
        if stored or rejected:
            log.info("pulled %d changes from %s (%d rejected) in %.0f ms; cursor %d of %d",
                     stored, site_id, rejected, elapsed, after, head)
        return PullResult(site_id, epoch, after, head, stored, rejected, reset, elapsed)

    async def _notify(self, site_id: str, changes: list[StoredChange]) -> None:
        if self._on_changes is None or not changes:
            return
        try:
            await self._on_changes(site_id, changes)
        except Exception:  # alerts must never stall the archive's feed
            log.exception("change hook failed for a batch from %s", site_id)

    def _checked(self, site_id: str, changes: Sequence[Any]) -> tuple[list[StoredChange], int]:
        out: list[StoredChange] = []
        bad = 0
        for c in changes:
            patient: str | None = None
            if not c.deleted:
                try:
                    patient = check_change(site_id, c.resource_type, c.resource_id, c.json,
                                           validate=self._validate)
                except InvalidInput as exc:
                    bad += 1
                    log.warning("rejected change %d from %s: %s", c.seq, site_id, exc.message)
                    continue
            out.append(StoredChange(c.resource_type, c.resource_id, c.seq, c.deleted,
                                    patient, None if c.deleted else bytes(c.json)))
        return out, bad
