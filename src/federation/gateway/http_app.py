"""The gateway's HTTP surface on uvicorn: health, metrics and the consortium view.

Errors leave as FHIR OperationOutcome documents through one table
(:mod:`federation.gateway.outcomes`); clinical endpoints (FHIR REST) arrive with later capabilities
and their authentication.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from federation import errors
from federation.archive.store import ArchiveStore
from federation.gateway.fanout import Requester
from federation.gateway.outcomes import operation_outcome
from federation.gateway.quality import SiteQuality
from federation.gateway.registry import NodeRegistry
from federation.identity.http import create_identity_router
from federation.identity.store import IdentityStore
from federation.store import GatewayStore, NodeRow, SiteRow
from federation.terminology.http import create_terminology_router

__all__ = ["create_http_app"]

#: until people sign in (the audit issue), HTTP calls are recorded as the gateway's API
HTTP_REQUESTER = Requester(kind="gateway", id="http-api")

def create_http_app(
    store: GatewayStore, registry: NodeRegistry, quality: SiteQuality, *, grpc_serving: Any,
    archive: ArchiveStore | None = None, identity_api: Any = None,
    identity: IdentityStore | None = None, referral_api: Any = None,
) -> FastAPI:
    """``grpc_serving`` is a zero-argument callable telling whether the gRPC server is up;
    with ``identity`` the EMPI's FHIR routes (PIXm, PDQm, Person) are served too."""
    app = FastAPI(title="Federation gateway", version="0.1.0", docs_url="/docs")

    @app.exception_handler(errors.FederationError)
    async def _federation_error(_: Request, exc: errors.FederationError) -> JSONResponse:
        status, body = operation_outcome(exc)
        return JSONResponse(body, status_code=status, media_type="application/fhir+json")

    if identity_api is not None:
        app.include_router(identity_api)

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

    @app.get("/metrics")
    async def metrics() -> Response:
        await registry.refresh_gauges()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

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

    app.include_router(create_terminology_router())  # FHIR $translate, Condition/$normalize
    if referral_api is not None:  # FHIR Task / ServiceRequest search and read
        app.include_router(referral_api)
    if identity is not None:  # FHIR Patient/$ihe-pix, Patient?…, Person/{id}
        app.include_router(create_identity_router(identity, archive, store=store,
                                                  requester=HTTP_REQUESTER))

    @app.get("/api/quality")
    async def all_quality(refresh: bool = False) -> dict[str, Any]:
        """Data quality of every online site (mapped counts, quarantined records, reasons)."""
        return await quality.reports(HTTP_REQUESTER, refresh=refresh)

    @app.get("/api/consortium/sites/{site_id}/quality")
    async def site_quality(site_id: str, refresh: bool = False) -> dict[str, Any]:
        return await quality.reports(HTTP_REQUESTER, site_ids=[site_id], refresh=refresh)

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
            "capabilities": list(node.capabilities),
            "registrations": node.registrations,
            "registered_at": node.registered_at.isoformat() if node.registered_at else None,
            "last_heartbeat_at": node.last_heartbeat_at.isoformat() if node.last_heartbeat_at else None,
            "state_changed_at": node.state_changed_at.isoformat() if node.state_changed_at else None,
        },
    }
