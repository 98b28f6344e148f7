"""Node enrolment, heartbeats and liveness, on top of the gateway store.

A node is identified by its certificate: the site id and tier come from the peer
identity the call guard read, and must agree with the consortium registry. Liveness is
decided from the stored last heartbeat, so any replica's sweeper can mark a silent
node unreachable and the store records each transition once.

Heartbeats are write-behind: a heartbeat from a node this replica knows to be online
is answered at once and buffered; :meth:`NodeRegistry.flush` writes the buffer in one
transaction every ``flush_every`` seconds (well inside ``unreachable_after``). A node
not known online here — first contact, back from unreachable, unknown to the store —
is written through, so refusals and transitions are never delayed. The buffer holds
at most one ``flush_every`` of heartbeats that a crashed replica may lose; the next
heartbeat replaces them. (Measured in bench/rpc_throughput.py: a write per
heartbeat capped the gateway at ~550 calls/s on SQLite.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from federation.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from federation.logs import describe_exception
from federation.rpc.metrics import NODES_BY_STATE
from federation.security.identity import PeerIdentity
from federation.store import GatewayStore, NodeRow

__all__ = ["NodeRegistry", "HeartbeatResult", "utcnow"]

log = logging.getLogger("federation.gateway.registry")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    node: NodeRow | None
    reregister: bool


class NodeRegistry:
    def __init__(
        self,
        store: GatewayStore,
        *,
        unreachable_after: dt.timedelta,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._store = store
        self._unreachable_after = unreachable_after
        self._clock = clock
        self._pending: dict[str, tuple[int, dt.datetime]] = {}
        self._online: set[str] = set()  # sites whose last write-through found them online

    async def register(
        self, peer: PeerIdentity, *, endpoint: str, software_version: str, capabilities: list[str]
    ) -> NodeRow:
        site_id = _node_site(peer)
        site = await asyncio.to_thread(self._store.require_site, site_id)
        if site.tier != peer.tier:
            raise Conflict(
                f"site '{site_id}' is a {site.tier} site in the consortium registry, but its "
                f"certificate says {peer.tier}; reissue the certificate with --tier {site.tier}"
            )
        if not endpoint or ":" not in endpoint:
            raise InvalidInput(
                f"endpoint must be host:port where the node serves NodeAgent, got {endpoint!r}"
            )
        node = await asyncio.to_thread(
            self._store.register_node,
            site_id,
            endpoint=endpoint,
            cert_serial=peer.serial,
            cert_fingerprint=peer.fingerprint_sha256,
            software_version=software_version[:64],
            capabilities=capabilities[:64],
            now=self._clock(),
        )
        self._online.add(site_id)
        log.info("node %s registered (endpoint %s, registration #%d)", site_id, endpoint,
                 node.registrations)
        return node

    async def heartbeat(self, peer: PeerIdentity, sequence: int) -> HeartbeatResult:
        site_id = _node_site(peer)
        if site_id in self._online:
            self._pending[site_id] = (sequence, self._clock())
            return HeartbeatResult(node=None, reregister=False)
        return await self._write_through(site_id, sequence, self._clock())

    async def _write_through(self, site_id: str, sequence: int, at: dt.datetime) -> HeartbeatResult:
        try:
            node = await asyncio.to_thread(self._store.heartbeat, site_id, sequence, at)
        except NotFound:
            self._online.discard(site_id)
            return HeartbeatResult(node=None, reregister=True)
        self._online.add(site_id)
        return HeartbeatResult(node=node, reregister=False)

    async def flush(self) -> None:
        """Write buffered heartbeats; nodes no longer online go back to write-through."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        missed = await asyncio.to_thread(self._store.record_heartbeats, pending)
        for site_id in missed:
            seq, at = pending[site_id]
            await self._write_through(site_id, seq, at)

    async def flush_forever(self, every: float, stop: asyncio.Event) -> None:
        await _every(every, stop, self.flush, "heartbeat flush")
        await self.flush()

    async def sweep_once(self) -> list[str]:
        await self.flush()  # never judge a node on heartbeats still in this replica's buffer
        now = self._clock()
        lost = await asyncio.to_thread(self._store.mark_unreachable, now - self._unreachable_after, now)
        for site_id in lost:
            self._online.discard(site_id)  # its next heartbeat writes through: back online
            log.warning("node %s missed its heartbeats: marked unreachable", site_id)
        return lost

    async def sweep_forever(self, every: float, stop: asyncio.Event) -> None:
        """Mark silent nodes unreachable every ``every`` seconds until ``stop`` is set."""

        async def sweep() -> None:
            await self.sweep_once()
            await self.refresh_gauges()

        await _every(every, stop, sweep, "liveness sweep")

    async def refresh_gauges(self) -> None:
        nodes = await asyncio.to_thread(self._store.list_nodes)
        counts = {"online": 0, "unreachable": 0, "offline": 0}
        for node in nodes:
            counts[node.state] = counts.get(node.state, 0) + 1
        for state, count in counts.items():
            NODES_BY_STATE.labels(state).set(count)


def _node_site(peer: PeerIdentity) -> str:
    if peer.role != "node" or not peer.site_id:
        raise PermissionDenied(f"only node certificates may do this, not a {peer.role} certificate")
    return peer.site_id


async def _every(every: float, stop: asyncio.Event, job: Callable[[], Awaitable[None]],
                 what: str) -> None:
    """Run ``job`` every ``every`` seconds until ``stop``; a failed run is logged and retried."""
    while not stop.is_set():
        try:
            await job()
        except Exception as exc:  # must outlive a passing database fault
            log.error("%s failed; retrying: %s", what, describe_exception(exc))
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            pass
