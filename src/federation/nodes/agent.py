"""Assemble and run one site's node agent: adapter, NodeAgent server, gateway link.

The node refuses to start when its configuration and certificate disagree (another
site id, a certificate without a node role): better a clear error at start than a
node that the gateway refuses on every call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import grpc
from grpc_health.v1 import health

from federation._runtime import settle_heap, wait_for_shutdown_signal
from federation.consult.studies import StudyFolder
from federation.envelope import Envelope
from federation.errors import ConfigError, FederationError
from federation.nodes.adapters import open_sources
from federation.nodes.feed import ChangeFeed, ScanInterrupted
from federation.nodes.inbox import NodeInbox
from federation.nodes.link import GatewayLink
from federation.nodes.receipts import NodeReceipts
from federation.nodes.server import create_node_server, mark_serving
from federation.nodes.service import NodeService
from federation.security.identity import RevocationList, identity_from_pem
from federation.security.rotation import TlsFiles
from federation.security.tls import require_current
from federation.settings import NodeSettings

__all__ = ["RunningNode", "start_node", "serve_node"]

log = logging.getLogger("federation.node")
PROGRESS_NOTICE_SECONDS = 2.0


@dataclass(slots=True)
class RunningNode:
    settings: NodeSettings
    service: NodeService
    link: GatewayLink
    inbox: NodeInbox
    receipts: NodeReceipts
    feed: ChangeFeed
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    #: the node's certificate, key and CA, followed on disk (rotation without a restart)
    tls_files: TlsFiles | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _halt: threading.Event = field(default_factory=threading.Event)  # for worker threads
    _tasks: list[asyncio.Task] = field(default_factory=list)

    async def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        self._halt.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.inbox.close()
        self.receipts.close()
        log.info("node %s stopped", self.settings.site_id)


async def start_node(settings: NodeSettings) -> RunningNode:
    files = TlsFiles(settings.tls.cert, settings.tls.key, settings.tls.ca)  # followed on disk
    tls = files.material
    require_current(tls, settings.tls.cert)
    me = identity_from_pem(tls.cert_pem)
    if me.role != "node" or me.site_id != settings.site_id:
        raise ConfigError(
            f"site_id is '{settings.site_id}' but the certificate {settings.tls.cert} is for "
            f"{me.role} '{me.name}'; issue one with `federation ca issue --site {settings.site_id}`"
        )
    adapter = await asyncio.to_thread(open_sources, settings.source)
    service = NodeService(settings.site_id, me.tier or "", adapter, settings.source.kind)
    revocations = RevocationList(settings.tls.crl, tls.ca_pem) if settings.tls.crl else None
    feed = ChangeFeed(settings.state_dir / "feed.sqlite")
    server, port, health_servicer = create_node_server(
        service, files, settings.listen, max_message_bytes=settings.max_message_bytes,
        revocations=revocations, feed=feed,
        studies=StudyFolder(settings.studies_dir) if settings.studies_dir else None)
    await server.start()
    await mark_serving(health_servicer)
    inbox = NodeInbox(settings.state_dir / "inbox.sqlite")
    receipts = NodeReceipts(settings.state_dir / "receipts.sqlite")
    link = GatewayLink(_with_port(settings, port), files, service, inbox, receipts)
    running = RunningNode(settings, service, link, inbox, receipts, feed, server, port,
                          health_servicer, files)
    running._tasks.append(asyncio.create_task(link.run(running._stop), name="gateway-link"))
    running._tasks.append(asyncio.create_task(
        _scan_loop(service, feed, link, settings.feed_scan_interval_ms / 1000, running._stop,
                   running._halt),
        name="change-feed"))
    log.info("node %s (%s) serving NodeAgent on port %d", settings.site_id, me.tier, port)
    return running


async def _scan_loop(service: NodeService, feed: ChangeFeed, link: GatewayLink,
                     interval: float, stop: asyncio.Event, halt: threading.Event) -> None:
    """Rescan the source into the change feed at start and then every ``interval``
    seconds, skipping sources whose files have not changed; tell the gateway when the
    feed moved. A failed scan (source offline) is logged and retried next time."""
    last_stamp: object | None = None
    head = await asyncio.to_thread(feed.head)
    if head:
        link.notify_changes(feed.epoch, head)  # whatever the gateway may have missed
    while not stop.is_set():
        try:
            stamp = await asyncio.to_thread(service.source_stamp)
            if stamp is None or stamp != last_stamp:
                result = await asyncio.to_thread(
                    feed.apply_scan, _until(halt, service.scan()), service.quarantined_ids,
                    _progress_notices(asyncio.get_running_loop(), link, feed.epoch))
                last_stamp = stamp
                service.serve_from(feed, stamp)
                if result.changed or result.deleted:
                    link.notify_changes(feed.epoch, result.head)
        except ScanInterrupted:
            return
        except FederationError as exc:
            log.warning("change feed scan failed: %s; retrying in %.0f s", exc.message, interval)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass


def _progress_notices(loop: asyncio.AbstractEventLoop, link: GatewayLink,
                      epoch: str, every: float = PROGRESS_NOTICE_SECONDS) -> Callable[[int], None]:
    """From the scanning thread: tell the gateway about stored batches every few seconds,
    so that a long first scan and the gateway's pull run side by side."""
    last = time.monotonic()

    def progress(head: int) -> None:
        nonlocal last
        if time.monotonic() - last >= every:
            last = time.monotonic()
            loop.call_soon_threadsafe(link.notify_changes, epoch, head)

    return progress


def _until(halt: threading.Event, items: Iterator[Envelope]) -> Iterator[Envelope]:
    """The scan, abandoned (raising, so that no tombstone is written) once ``halt`` is set."""
    for item in items:
        if halt.is_set():
            raise ScanInterrupted()
        yield item


def _with_port(settings: NodeSettings, port: int) -> NodeSettings:
    """When listening on port 0, advertise the port actually bound."""
    if settings.advertise or not settings.listen.endswith(":0"):
        return settings

    return replace(settings, advertise=f"{settings.listen.rpartition(':')[0]}:{port}")


async def serve_node(settings: NodeSettings) -> None:
    running = await start_node(settings)
    settle_heap()
    await wait_for_shutdown_signal()
    await running.stop()
