"""Assemble and run the gateway: store, registry, gRPC server and HTTP app in one loop.

``start_gateway(settings)`` returns a running :class:`RunningGateway` (tests use it
with ports 0); ``serve(settings)`` runs one until SIGINT/SIGTERM. Migrations run at
start for the embedded default; at scale a migration Job runs them first and the
upgrade here is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from federation._proto.v1 import (
    archive_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    diagnostics_pb2,
    diagnostics_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    referral_pb2_grpc,
)
from federation._runtime import settle_heap, wait_for_shutdown_signal
from federation.archive.alerts import CriticalAlerts
from federation.archive.care import CareContext, CareRegistry
from federation.archive.deid import Deidentifier
from federation.archive.export import ExportRunner, ExportStore
from federation.archive.http import create_archive_router
from federation.archive.people import PersonDirectory
from federation.archive.record import RecordGatherer
from federation.archive.service import ArchiveService
from federation.archive.servicer import ARCHIVE_POLICY, ArchiveServicer
from federation.archive.servicer import SERVICE_NAME as ARCHIVE_SERVICE
from federation.archive.store import ArchiveStore
from federation.archive.sync import FeedPuller
from federation.audit.console_http import create_audit_console_router
from federation.audit.log import AuditLog
from federation.audit.refusals import refusal_logger
from federation.audit.service import AUDIT_POLICY, AuditServicer
from federation.audit.tree_heads import TreeHeadSigner
from federation.consult.http import create_consult_router
from federation.consult.rules import load_rules as load_consult_rules
from federation.consult.service import ConsultService
from federation.consult.servicer import CONSULT_POLICY, ConsultsServicer, add_consults
from federation.consult.servicer import SERVICE as CONSULTS_SERVICE
from federation.errors import FederationError, Unavailable
from federation.gateway.dashboard import create_dashboard_router
from federation.gateway.diagnostics import DIAGNOSTICS_POLICY, DiagnosticsServicer
from federation.gateway.http_app import create_http_app
from federation.gateway.inbox import Inbox
from federation.gateway.node_clients import NodeClients
from federation.gateway.quality import SiteQuality
from federation.gateway.registry import NodeRegistry
from federation.gateway.search import FederatedSearch
from federation.gateway.servicer import GATEWAY_POLICY, GatewayServicer
from federation.identity.http_api import create_identity_api
from federation.identity.review_http import create_review_router
from federation.identity.store import IdentityStore
from federation.referral.http import create_referral_router
from federation.referral.rules import load_rules
from federation.referral.service import ReferralService
from federation.referral.servicer import REFERRALS_POLICY, ReferralsServicer
from federation.referral.servicer import SERVICE as REFERRALS_SERVICE
from federation.rpc.channels import server_options
from federation.rpc.guard import CallGuard
from federation.security.identity import RevocationList
from federation.security.limits import RateLimiter
from federation.security.privacy import FieldCipher, create_keyring
from federation.security.rotation import TlsFiles, reloading_server_credentials
from federation.security.signing import Signer
from federation.security.tls import TlsMaterial, require_current
from federation.security.tokens import AccessTokens, TrustAnchor
from federation.settings import GatewaySettings
from federation.store import GatewayStore, make_engine, upgrade
from federation.workflow.store import WorkflowStore

__all__ = ["RunningGateway", "start_gateway", "serve"]

log = logging.getLogger("federation.gateway")
SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
DIAGNOSTICS = diagnostics_pb2.DESCRIPTOR.services_by_name["Diagnostics"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


@dataclass(slots=True)
class RunningGateway:
    settings: GatewaySettings
    store: GatewayStore
    inbox: Inbox
    registry: NodeRegistry
    grpc_server: grpc.aio.Server
    grpc_port: int
    http_port: int
    health: health.aio.HealthServicer
    _http: _EmbeddedUvicorn
    clients: NodeClients
    archive: ArchiveStore
    identity: IdentityStore
    puller: FeedPuller
    archive_service: ArchiveService
    alerts: CriticalAlerts
    exports: ExportRunner
    referrals: ReferralService
    consults: ConsultService
    audit: AuditLog
    tree_heads: TreeHeadSigner
    #: the gateway's certificate, key and CA, followed on disk (rotation without a restart)
    tls_files: TlsFiles | None = None
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def http_app(self) -> Any:
        """The FastAPI application served on ``http_port``."""
        return self._http.config.app

    async def stop(self, grace: float = 2.0) -> None:
        """Stop taking calls, finish what is in flight (up to ``grace`` s), close."""
        self._stop.set()
        await self.health.enter_graceful_shutdown()
        self._http.should_exit = True
        await self.grpc_server.stop(grace)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.clients.close()
        self.store.dispose()
        log.info("gateway stopped")


def _bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named: asyncio turns Nagle off (TCP_NODELAY) only on accepted sockets whose
    # proto says TCP; with proto 0, each keep-alive response written in two parts (head,
    # body) waited ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise Unavailable(f"cannot listen for HTTP on {listen}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start_gateway(settings: GatewaySettings) -> RunningGateway:
    engine = make_engine(settings.database_url)
    await asyncio.to_thread(upgrade, engine)
    store = GatewayStore(engine)
    for site in settings.sites:
        await asyncio.to_thread(store.upsert_site, site.id, site.name, site.tier, site.parent)

    files = TlsFiles(settings.tls.cert, settings.tls.key, settings.tls.ca)
    # what is signed with the gateway's key (tree heads, access tokens) and the export key
    # derived from it keep the key loaded at start; TLS follows the files (see rotation)
    tls = files.material
    require_current(tls, settings.tls.cert)
    revocations = RevocationList(settings.tls.crl, tls.ca_pem) if settings.tls.crl else None
    trust = TrustAnchor(tls.ca_pem, revocations.is_revoked if revocations is not None else None)
    registry = NodeRegistry(store, unreachable_after=dt.timedelta(
        milliseconds=settings.unreachable_after_ms))
    inbox = Inbox(store, poll_seconds=settings.inbox_poll_ms / 1000)
    clients = NodeClients(files, settings.max_message_bytes)
    search = FederatedSearch(store, clients, default_deadline_ms=settings.search_deadline_ms)
    cipher = None
    if settings.privacy_keyring is not None:
        create_keyring(settings.privacy_keyring)   # the embedded default makes its own
        cipher = FieldCipher(settings.privacy_keyring)
    identity = IdentityStore(engine, cipher=cipher)
    archive = ArchiveStore(engine, identity.index)
    service, alerts, exports = _archive_parts(settings, engine, store, archive, clients, inbox,
                                              tls)
    puller = FeedPuller(store, archive, clients, interval_s=settings.sync_interval_ms / 1000,
                        validate=settings.sync_validate, modes=settings.archive_modes(),
                        on_changes=alerts)
    referrals = ReferralService(
        store, WorkflowStore(engine), load_rules(settings.referral_rules), identity=identity,
        clients=clients, packet_deadline_s=settings.search_deadline_ms / 1000, wake=inbox.wake)
    inbox.on_ack(referrals.receipt)   # a result's receipt at the requester closes the loop
    consults = ConsultService(
        store, WorkflowStore(engine), load_consult_rules(settings.consult_rules),
        identity=identity, clients=clients, ca_pem=tls.ca_pem,
        is_revoked=revocations.is_revoked if revocations is not None else None,
        deadline_s=settings.search_deadline_ms / 1000, wake=inbox.wake)

    audit = AuditLog(engine)
    tree_heads = TreeHeadSigner(audit, Signer.from_tls(tls))
    server = grpc.aio.server(
        interceptors=[CallGuard("gateway", GATEWAY_POLICY | DIAGNOSTICS_POLICY | ARCHIVE_POLICY
                                | REFERRALS_POLICY | CONSULT_POLICY | AUDIT_POLICY,
                                revocations,
                                on_refused=refusal_logger(store),
                                limiter=RateLimiter(settings.grpc_rate_per_node,
                                                    max(1, int(3 * settings.grpc_rate_per_node)),
                                                    what="certificate"))],
        options=server_options(settings.max_message_bytes),
    )
    audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(audit, tree_heads), server)
    gateway_pb2_grpc.add_GatewayServicer_to_server(
        GatewayServicer(registry, inbox, search, heartbeat_ms=settings.heartbeat_interval_ms,
                        puller=puller, archive=(store, archive), identity=identity),
        server)
    diagnostics_pb2_grpc.add_DiagnosticsServicer_to_server(DiagnosticsServicer(store), server)
    archive_pb2_grpc.add_ArchiveServicer_to_server(ArchiveServicer(service), server)
    referral_pb2_grpc.add_ReferralsServicer_to_server(ReferralsServicer(referrals), server)
    add_consults(ConsultsServicer(consults), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE, DIAGNOSTICS, ARCHIVE_SERVICE, REFERRALS_SERVICE, CONSULTS_SERVICE,
         AUDIT_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    try:
        port = server.add_secure_port(settings.grpc_listen,
                                      reloading_server_credentials(files))
    except RuntimeError:
        raise Unavailable(f"cannot listen for gRPC on {settings.grpc_listen}: address already "
                          "in use or not available") from None
    await server.start()
    for name in ("", SERVICE, ARCHIVE_SERVICE, REFERRALS_SERVICE, CONSULTS_SERVICE,
                 AUDIT_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    serving = {"up": True}
    quality = SiteQuality(store, clients, deadline_ms=settings.search_deadline_ms)
    tokens = AccessTokens(tls.key_pem, tls.cert_pem, trust)
    app = create_http_app(store, registry, quality, grpc_serving=lambda: serving["up"],
                          archive=archive, identity_api=create_identity_api(identity),
                          identity=identity, audit=audit, auth=(tokens, trust),
                          routers=[create_archive_router(service, tokens, exports=exports.jobs,
                                                         runner=exports),
                                   create_referral_router(referrals, store=store),
                                   create_consult_router(
                                       consults, store=store,
                                       view_max_bytes=settings.consult_view_max_bytes),
                                   # the administrators' console: audit, dashboard, EMPI review
                                   create_audit_console_router(
                                       store, audit, identity, lambda: files.material.ca_pem),
                                   create_dashboard_router(store, audit, WorkflowStore(engine)),
                                   create_review_router(identity, store=store)],
                          limits=(RateLimiter(settings.http_rate_per_user,
                                              max(1, int(3 * settings.http_rate_per_user)),
                                              what="user"),
                                  RateLimiter(settings.signin_rate_per_minute / 60,
                                              max(1, int(settings.signin_rate_per_minute / 3)),
                                              what="client address")))
    sock = _bind(settings.http_listen)
    http = _EmbeddedUvicorn(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           access_log=False))
    running = RunningGateway(
        settings=settings, store=store, inbox=inbox, registry=registry, grpc_server=server,
        grpc_port=port, http_port=sock.getsockname()[1], health=health_servicer, _http=http,
        clients=clients, archive=archive, identity=identity, puller=puller, audit=audit,
        tree_heads=tree_heads, archive_service=service, alerts=alerts, exports=exports,
        referrals=referrals, consults=consults, tls_files=files,
    )
    sweep_every = max(0.05, min(1.0, settings.heartbeat_interval_ms / 4000))
    flush_every = max(0.02, min(0.5, settings.unreachable_after_ms / 8000))
    running._tasks = [
        asyncio.create_task(http.serve(sockets=[sock]), name="http"),
        asyncio.create_task(registry.sweep_forever(sweep_every, running._stop), name="sweeper"),
        asyncio.create_task(registry.flush_forever(flush_every, running._stop), name="flush"),
        asyncio.create_task(puller.run(running._stop), name="change-feed-puller"),
        asyncio.create_task(exports.run(running._stop), name="export-runner"),
        asyncio.create_task(_escalate_forever(referrals, settings.referral_sweep_ms / 1000,
                                              running._stop), name="referral-time-limits"),
        asyncio.create_task(_escalate_forever(consults, settings.consult_sweep_ms / 1000,
                                              running._stop), name="consult-time-limits"),
        asyncio.create_task(_assemble_forever(referrals, settings.inbox_poll_ms / 1000,
                                              running._stop), name="referral-packets"),
        asyncio.create_task(_assemble_forever(consults, settings.inbox_poll_ms / 1000,
                                              running._stop), name="consult-packets"),
        asyncio.create_task(tree_heads.run(settings.audit_sth_interval_ms / 1000, running._stop),
                            name="audit-tree-heads"),
    ]
    log.info("gateway serving gRPC on %s (port %d), HTTP on port %d",
             settings.grpc_listen, port, running.http_port)
    return running


def _archive_parts(settings: GatewaySettings, engine, store: GatewayStore,
                   archive: ArchiveStore, clients: NodeClients, inbox: Inbox,
                   tls: TlsMaterial) -> tuple[ArchiveService, CriticalAlerts, ExportRunner]:
    """The regional archive's person-level reads, critical-result alerts and research
    export, built around the store (each site's archive mode from ``[[sites]]``)."""
    modes = settings.archive_modes()
    people = PersonDirectory(engine)
    care = CareRegistry(CareContext(engine, archive, people.records_of,
                                    settings.archive_care_window_days))
    gatherer = RecordGatherer(store, archive, clients, modes,
                              deadline_ms=settings.archive_deadline_ms,
                              validate=settings.sync_validate,
                              index_cache_rows=settings.archive_index_cache_rows)
    service = ArchiveService(store, people, care, gatherer,
                             care_window_days=settings.archive_care_window_days)
    alerts = CriticalAlerts(inbox, care, person_of=people.person_of,
                            records_of=people.records_of,
                            max_age=dt.timedelta(hours=settings.archive_alert_max_age_hours))
    key = settings.archive_deid_key.encode() or hashlib.sha256(
        b"federation-deid:" + tls.key_pem).digest()
    exports = ExportRunner(ExportStore(engine), archive, people, Deidentifier(key), modes)
    return service, alerts, exports


async def _escalate_forever(workflow: ReferralService | ConsultService, every: float,
                            stop: asyncio.Event) -> None:
    """Check a workflow's time limits every ``every`` seconds (replicas split the work)."""
    name = "consult" if isinstance(workflow, ConsultService) else "referral"
    while not stop.is_set():
        try:
            escalated = await workflow.escalate()
            if escalated:
                log.warning("escalated %d %s(s) past their time limit: %s", len(escalated),
                            name, ", ".join(r.task_id for r in escalated))
        except FederationError as exc:
            log.warning("%s time-limit check failed: %s", name, exc.message)
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            pass


async def _assemble_forever(workflow: ReferralService | ConsultService, poll: float,
                            stop: asyncio.Event) -> None:
    """Assemble a workflow's packets: at once for tasks this replica created, and every
    ``poll`` seconds for those of other replicas and for retries."""
    while not stop.is_set():
        workflow.packets_due.clear()
        try:
            await workflow.assemble_packets()
        except FederationError as exc:
            log.warning("packet assembly failed: %s", exc.message)
        try:
            await asyncio.wait_for(workflow.packets_due.wait(), timeout=poll)
        except TimeoutError:
            pass


async def serve(settings: GatewaySettings) -> None:
    """Run the gateway until SIGINT or SIGTERM."""
    running = await start_gateway(settings)
    settle_heap()
    await wait_for_shutdown_signal()
    log.info("shutting down")
    await running.stop()
