"""The node's link to the gateway: register, heartbeat, receive inbound work.

One session = register, then heartbeats and the inbox stream side by side until any of
them fails. A lost gateway (restart, network) ends the session; the link waits with
exponential backoff and full jitter (so a restarted gateway is not stormed by every
site at once) and starts a new session, which registers again and resumes the inbox
from the last item it stored. Nothing is acknowledged before it is stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from dataclasses import dataclass, field

import grpc

from federation import __version__
from federation._proto.v1 import audit_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from federation.audit.receipts import fetch_receipts
from federation.errors import FederationError, IntegrityError, Unavailable
from federation.nodes.inbox import InboxItem, NodeInbox
from federation.nodes.receipts import NodeReceipts
from federation.nodes.service import RESOURCE_TYPES, NodeService
from federation.rpc.channels import rotating_channel
from federation.rpc.rotating import RotatingChannel
from federation.rpc.status import error_from_rpc
from federation.security.ca import GATEWAY_SERVER_NAME
from federation.security.rotation import TlsFiles
from federation.settings import NodeSettings

__all__ = ["GatewayLink", "LinkStatus"]

log = logging.getLogger("federation.node.link")
CALL_TIMEOUT = 10.0
#: acknowledgements on their way to the gateway at once (each after its item is stored)
ACKS_IN_FLIGHT = 32


class _Reregister(Exception):
    """The gateway no longer knows this node (e.g. its store was reset)."""


@dataclass(slots=True)
class LinkStatus:
    connected: bool = False
    sessions: int = 0
    registrations: int = 0
    heartbeats: int = 0
    last_error: str = ""
    last_heartbeat_at: dt.datetime | None = None
    received_items: int = 0
    #: audit receipts kept, and the last integrity alarm (a forked gateway log)
    receipts: int = 0
    audit_alarm: str = ""
    #: certificate rotations followed within a session (see GatewayLink._follow_rotation)
    certificate_rotations: int = 0
    connected_event: asyncio.Event = field(default_factory=asyncio.Event)


class GatewayLink:
    def __init__(
        self, settings: NodeSettings, tls: TlsFiles, service: NodeService, inbox: NodeInbox,
        receipts: NodeReceipts | None = None,
    ) -> None:
        self._receipts = receipts
        self._settings = settings
        self._tls = tls
        self._service = service
        self._inbox = inbox
        self.status = LinkStatus()
        self._rng = random.Random()
        self._feed_notice: tuple[str, int] | None = None
        self._feed_changed = asyncio.Event()

    def notify_changes(self, epoch: str, head: int) -> None:
        """Tell the gateway (now, or as soon as a session is up) that the feed moved."""
        self._feed_notice = (epoch, head)
        self._feed_changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a session with the gateway until ``stop`` is set."""
        backoff = self._settings.backoff_initial_ms / 1000
        ceiling = self._settings.backoff_max_ms / 1000
        while not stop.is_set():
            try:
                await self._session(stop)
            except (grpc.aio.AioRpcError, FederationError, _Reregister) as exc:
                self._lost(exc)
                if self.status.heartbeats:  # the session had worked: start small again
                    backoff = self._settings.backoff_initial_ms / 1000
            delay = self._rng.uniform(backoff / 2, backoff)
            backoff = min(ceiling, backoff * 2)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
        self.status.connected = False

    def _lost(self, exc: BaseException) -> None:
        if isinstance(exc, grpc.aio.AioRpcError):
            message = error_from_rpc(exc, f"gateway {self._settings.gateway}").message
        elif isinstance(exc, _Reregister):
            message = "the gateway asked this node to register again"
        else:
            message = str(exc)
        if self.status.connected or message != self.status.last_error:
            log.warning("gateway link down: %s; reconnecting with backoff", message)
        self.status.connected = False
        self.status.connected_event.clear()
        self.status.last_error = message

    async def _session(self, stop: asyncio.Event) -> None:
        channel = rotating_channel(self._settings.gateway, self._tls,
                                   self._settings.max_message_bytes, server_name=GATEWAY_SERVER_NAME)
        async with channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            reply, generation = await self._register(stub, channel)
            self.status.sessions += 1
            self.status.connected = True
            self.status.last_error = ""
            self.status.connected_event.set()
            interval = max(0.05, reply.heartbeat_interval_ms / 1000)
            tasks = [
                asyncio.create_task(self._heartbeats(stub, interval)),
                asyncio.create_task(self._notices(stub)),
                asyncio.create_task(stop.wait()),
            ]
            if self._receipts is not None:
                tasks.append(asyncio.create_task(self._audit(audit_pb2_grpc.AuditStub(channel))))
            receive = asyncio.create_task(self._receive(stub))
            rotation = asyncio.create_task(channel.rotation(generation))
            try:
                while True:
                    done, _ = await asyncio.wait([*tasks, receive, rotation],
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if done != {rotation}:
                        break
                    receive, generation = await self._follow_rotation(stub, channel, receive)
                    rotation = asyncio.create_task(channel.rotation(generation))
            finally:
                for task in (*tasks, receive, rotation):
                    task.cancel()
                await asyncio.gather(*tasks, receive, rotation, return_exceptions=True)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]

    async def _register(self, stub: gateway_pb2_grpc.GatewayStub, channel: RotatingChannel
                        ) -> tuple[gateway_pb2.RegisterResponse, int]:
        """Register; returns the reply and the certificate generation it was made with."""
        call = stub.Register(
            gateway_pb2.RegisterRequest(
                endpoint=self._settings.endpoint, software_version=__version__,
                capabilities=list(RESOURCE_TYPES)),
            timeout=CALL_TIMEOUT,
        )
        generation = channel.generation  # the call took its channel (and certificate) above
        reply = await call
        self.status.registrations = reply.registrations
        log.info("registered with the gateway as %s (registration #%d)", reply.site_id,
                 reply.registrations)
        return reply, generation

    async def _follow_rotation(self, stub: gateway_pb2_grpc.GatewayStub, channel: RotatingChannel,
                               receive: asyncio.Task[None]) -> tuple[asyncio.Task[None], int]:
        """The node's certificate was rotated on disk, and new calls already present the
        new one. Register again, so that the gateway records the new certificate, and move
        the inbox stream to the new connection (items not yet acknowledged come again and
        are acknowledged again, stored once); the old connection then has nothing left."""
        _, generation = await self._register(stub, channel)
        self.status.certificate_rotations += 1
        receive.cancel()
        await asyncio.gather(receive, return_exceptions=True)
        return asyncio.create_task(self._receive(stub)), generation

    async def _heartbeats(self, stub: gateway_pb2_grpc.GatewayStub, interval: float) -> None:
        sequence = 0
        while True:
            sequence += 1
            reply = await stub.Heartbeat(gateway_pb2.HeartbeatRequest(sequence=sequence),
                                         timeout=CALL_TIMEOUT)
            if reply.reregister:
                raise _Reregister()
            self.status.heartbeats += 1
            self.status.last_heartbeat_at = dt.datetime.now(dt.UTC)
            interval = max(0.05, (reply.heartbeat_interval_ms or interval * 1000) / 1000)
            await asyncio.sleep(interval)

    async def _notices(self, stub: gateway_pb2_grpc.GatewayStub) -> None:
        """Send the newest feed notice; one that fails is sent again by the next session."""
        while True:
            await self._feed_changed.wait()
            if self._feed_notice is None:
                self._feed_changed.clear()
                continue
            epoch, head = self._feed_notice
            await stub.NotifyChanges(gateway_pb2.ChangesNotice(epoch=epoch, head=head),
                                     timeout=CALL_TIMEOUT)
            if self._feed_notice == (epoch, head):
                self._feed_changed.clear()

    async def _audit(self, stub: audit_pb2_grpc.AuditStub) -> None:
        """Fetch and check this node's audit receipts now and then. A gateway whose log
        does not check out raises an alarm (logged, in the status); nothing is kept."""
        assert self._receipts is not None
        interval = self._settings.audit_receipts_interval_ms / 1000
        while True:
            try:
                new = await fetch_receipts(stub, self._receipts, self._tls.material.ca_pem,
                                           self._settings.site_id)
                self.status.receipts += new
            except IntegrityError as exc:
                self.status.audit_alarm = exc.message
                log.error("AUDIT ALARM: the gateway's audit log does not check out: %s",
                          exc.message)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise  # the link is down: the session starts over
                log.warning("the gateway serves no audit trail (an older version): this "
                            "node keeps no receipts until it does")
                await asyncio.Event().wait()  # never returns: the session goes on
            await asyncio.sleep(interval)

    async def _receive(self, stub: gateway_pb2_grpc.GatewayStub) -> None:
        """Store each inbound item, then acknowledge it; a redelivery is acked again only.

        Items are stored one after another, in the order they arrive; acknowledgements
        go out behind them, up to ``ACKS_IN_FLIGHT`` at once, so that a burst is not held
        to one round trip per item. A failed ack ends the session: the gateway sends the
        unacknowledged items again, and they are acked again (stored once)."""
        # resume from 0: the gateway sends only what is not yet acknowledged, and an
        # item stored here but not acked before a crash must be acked now
        stream = stub.StreamInbox(gateway_pb2.StreamInboxRequest(after_sequence=0))
        window = asyncio.Semaphore(ACKS_IN_FLIGHT)
        acks: set[asyncio.Task[None]] = set()

        async def ack(item_id: str) -> None:
            try:
                await stub.AckWorkItem(gateway_pb2.AckWorkItemRequest(item_id=item_id),
                                       timeout=CALL_TIMEOUT)
            finally:
                window.release()

        try:
            async for item in stream:
                fresh = await asyncio.to_thread(self._inbox.store, InboxItem(
                    item_id=item.item_id, sequence=item.sequence, kind=item.kind,
                    source_site=item.source_site or None, content_type=item.content_type,
                    payload=item.payload,
                    received_at=dt.datetime.now(dt.UTC),
                ))
                for done in [t for t in acks if t.done()]:
                    acks.discard(done)
                    done.result()                   # a failed ack: reconnect
                await window.acquire()
                acks.add(asyncio.create_task(ack(item.item_id)))
                if fresh:
                    self.status.received_items += 1
                    log.info("inbox: received %s item %s", item.kind, item.item_id)
            await asyncio.gather(*acks)
        finally:
            for task in acks:
                task.cancel()
        raise Unavailable("the gateway closed the inbox stream")  # a lost link: reconnect

