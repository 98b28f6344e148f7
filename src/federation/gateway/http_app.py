"""The gateway's HTTP surface on uvicorn: health, metrics and the consortium view.

Errors leave as FHIR OperationOutcome documents through one table
(:mod:`federation.gateway.outcomes`). Every route passes the authorisation matrix
(:mod:`federation.security.authz`) through the app-wide :class:`Authorize` dependency:
people sign in at ``POST /auth/token`` and send ``Authorization: Bearer …``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from federation import errors
from federation.archive.store import ArchiveStore
from federation.audit.http import create_audit_router
from federation.audit.log import AuditLog
from federation.console.admin import create_admin_router
from federation.console.doctor import create_doctor_router
from federation.console.doctor_referrals import create_doctor_referrals_router
from federation.console.routes import console_crash, console_error, create_console_router
from federation.console.specialist import create_specialist_router
from federation.console.web import STATIC as CONSOLE_STATIC
from federation.console.web import ApiError, Console, ServerTiming
from federation.gateway.auth_api import (
    CONSOLE_PREFIX,
    Authorize,
    create_auth_router,
    requester_of,
)
from federation.gateway.ops_metrics import store_registry
from federation.gateway.outcomes import operation_outcome
from federation.gateway.quality import SiteQuality
from federation.gateway.registry import NodeRegistry
from federation.identity.http import create_identity_router
from federation.identity.store import IdentityStore
from federation.security.limits import RateLimiter
from federation.security.tokens import AccessTokens, TrustAnchor
from federation.store import GatewayStore, NodeRow, SiteRow
from federation.store.ops_view import operations_snapshot
from federation.terminology.http import create_terminology_router

__all__ = ["create_http_app"]

log = logging.getLogger(__name__)


def create_http_app(
    store: GatewayStore, registry: NodeRegistry, quality: SiteQuality, *, grpc_serving: Any,
    auth: tuple[AccessTokens, TrustAnchor],
    limits: tuple[RateLimiter, RateLimiter] | None = None,
    archive: ArchiveStore | None = None, identity_api: Any = None,
    identity: IdentityStore | None = None, audit: AuditLog | None = None,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """``grpc_serving`` is a zero-argument callable telling whether the gRPC server is up;
    ``limits`` are the per-user and per-client (sign-in) rate limiters;
    with ``identity`` the EMPI's FHIR routes (PIXm, PDQm, Person) are served too."""
    per_user, per_client = limits or (RateLimiter(20.0, 60, what="user"),
                                      RateLimiter(0.5, 10, what="client"))
    app = FastAPI(title="Federation gateway", version="0.1.0", docs_url="/docs",
                  dependencies=[Depends(Authorize(auth[0], per_user, store))])

    @app.exception_handler(errors.FederationError)
    async def _federation_error(request: Request, exc: errors.FederationError) -> Response:
        status, body = operation_outcome(exc)
        if request.url.path.startswith(CONSOLE_PREFIX):   # people get a page, not JSON
            return console_error(request, status, exc.message)
        headers = ({"WWW-Authenticate": 'Bearer realm="federation"'} if status == 401
                   else {"Retry-After": str(exc.retry_after)}
                   if isinstance(exc, errors.RateLimited) else None)
        return JSONResponse(body, status_code=status, media_type="application/fhir+json",
                            headers=headers)

    @app.exception_handler(ApiError)
    async def _console_api_error(request: Request, exc: ApiError) -> Response:
        """A console page's call to this API was refused: the page says why."""
        return console_error(request, exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(CONSOLE_PREFIX):
            return console_error(request, exc.status_code, "")
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        """An unexpected failure: people see a page with a reference, API clients an
        OperationOutcome; the traceback goes to the log only (no patient data in it)."""
        if request.url.path.startswith(CONSOLE_PREFIX):
            return console_crash(request, exc)
        reference = uuid.uuid4().hex[:12]
        log.error("HTTP %s %s failed (reference %s)", request.method, request.url.path,
                  reference, exc_info=exc)
        return JSONResponse({"resourceType": "OperationOutcome", "issue": [{
            "severity": "fatal", "code": "exception",
            "diagnostics": f"the gateway failed unexpectedly (reference {reference}); "
                           "try again, and report the reference if it persists"}]},
            status_code=500, media_type="application/fhir+json")

    # the web console: pages for people, a client of this same API (federation.console)
    app.state.console = Console(app, auth[0])
    app.add_middleware(ServerTiming)
    app.include_router(create_console_router(store))
    app.include_router(create_admin_router())
    app.include_router(create_doctor_router())
    app.include_router(create_doctor_referrals_router())
    app.include_router(create_specialist_router(auth[1].ca_pem))
    app.mount(CONSOLE_PREFIX + "/static", StaticFiles(directory=CONSOLE_STATIC),
              name="console-static")

    if identity_api is not None:
        app.include_router(identity_api)
    app.include_router(create_auth_router(store, *auth, per_client))
    for router in routers:  # capabilities that bring their own routes (archive …)
        app.include_router(router)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        checks: dict[str, str] = {"grpc": "serving" if grpc_serving() else "not serving"}
        try:
            await asyncio.to_thread(store.ping)
            checks["database"] = "ok"
        except errors.FederationError as exc:
            checks["database"] = exc.message
        healthy = checks["database"] == "ok" and checks["grpc"] == "serving"
        return JSONResponse({"status": "ok" if healthy else "unhealthy", "checks": checks},
                            status_code=200 if healthy else 503)

    ops = store_registry(lambda: operations_snapshot(store.engine))

    @app.get("/metrics")
    async def metrics() -> Response:
        """This process's counters, then the consortium's figures read from the store."""
        await registry.refresh_gauges()
        from_store = await asyncio.to_thread(generate_latest, ops)
        return Response(generate_latest() + from_store, media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/consortium")
    async def consortium() -> dict[str, Any]:
        view = await asyncio.to_thread(store.consortium_view)
        return {"sites": [_site_json(site, node) for site, node in view]}

    @app.get("/api/consortium/sites/{site_id}")
    async def one_site(site_id: str) -> dict[str, Any]:
        site = await asyncio.to_thread(store.require_site, site_id)
        node = await asyncio.to_thread(store.get_node, site_id)
        events = await asyncio.to_thread(store.node_events, site_id, 20)
        body = _site_json(site, node)
        body["events"] = [
            {"at": e.at.isoformat(), "from": e.from_state, "to": e.to_state, "reason": e.reason}
            for e in events
        ]
        return body

    if audit is not None:  # reports, tree head, AuditEvent/{leaf}, proofs
        app.include_router(create_audit_router(audit))
    app.include_router(create_terminology_router())  # FHIR $translate, Condition/$normalize
    if identity is not None:  # FHIR Patient/$ihe-pix, Patient?…, Person/{id}
        app.include_router(create_identity_router(identity, archive, store=store))

    @app.get("/api/quality")
    async def all_quality(request: Request, refresh: bool = False) -> dict[str, Any]:
        """Data quality of every online site (mapped counts, quarantined records, reasons)."""
        return await quality.reports(requester_of(request), refresh=refresh)

    @app.get("/api/consortium/sites/{site_id}/quality")
    async def site_quality(site_id: str, request: Request,
                           refresh: bool = False) -> dict[str, Any]:
        return await quality.reports(requester_of(request), site_ids=[site_id], refresh=refresh)

    @app.get("/api/archive/sync")
    async def archive_sync() -> dict[str, Any]:
        """How far the archive has read each site's change feed, and what it holds."""
        if archive is None:
            raise errors.Unavailable("this gateway keeps no archive")
        cursors = await asyncio.to_thread(archive.cursors)
        counts = await asyncio.to_thread(archive.counts)
        return {"sites": [{
            "site_id": c.site_id, "epoch": c.epoch, "cursor": c.after, "node_head": c.node_head,
            "behind": max(0, c.node_head - c.after), "pulls": c.pulls, "rejected": c.rejected,
            "last_pull_at": c.last_pull_at.isoformat() if c.last_pull_at else None,
            "caught_up_at": c.caught_up_at.isoformat() if c.caught_up_at else None,
            "resources": dict(sorted(counts.get(c.site_id, {}).items())),
        } for c in cursors]}

    return app


def _site_json(site: SiteRow, node: NodeRow | None) -> dict[str, Any]:
    return {
        "site_id": site.site_id,
        "name": site.name,
        "tier": site.tier,
        "parent_site_id": site.parent_site_id,
        "node": None if node is None else {
            "state": node.state,
            "endpoint": node.endpoint,
            "software_version": node.software_version,
            "cert_serial": node.cert_serial,  # changes when the node's certificate is rotated
            "capabilities": list(node.capabilities),
            "registrations": node.registrations,
            "registered_at": node.registered_at.isoformat() if node.registered_at else None,
            "last_heartbeat_at": node.last_heartbeat_at.isoformat() if node.last_heartbeat_at else None,
            "state_changed_at": node.state_changed_at.isoformat() if node.state_changed_at else None,
        },
    }
