"""The audit trail on the gateway's HTTP API (JSON; errors as FHIR OperationOutcome).

* ``GET /api/audit/report?since=YYYY-MM-DD&until=YYYY-MM-DD`` — the administrators'
  report (:mod:`federation.audit.reports`): volume per site pair per day, reads by
  purpose, refusals, break-glass uses with reasons, anomalies. ``until`` is exclusive;
  the default is the last 7 days; at most 92 days at once.
* ``GET /api/audit/tree-head`` — the newest signed tree head (hex/base64, with the
  signer certificate), for anyone who wants to pin it outside the gateway.
* ``GET /fhir/AuditEvent/{leaf}`` — one leaf's AuditEvent as stored (FHIR JSON).
* ``GET /api/audit/proof/{leaf}?tree_size=N`` — its inclusion proof.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from federation.audit.log import AuditLog
from federation.audit.reports import CST, build_report
from federation.errors import InvalidInput, NotFound

__all__ = ["create_audit_router", "report_window"]

MAX_DAYS = 92


def report_window(since: str | None, until: str | None, *,
                  today: dt.date | None = None) -> tuple[dt.datetime, dt.datetime]:
    """[since, until) as aware datetimes at local midnight, checked."""
    try:
        end = dt.date.fromisoformat(until) if until else (today or dt.datetime.now(CST).date()) \
            + dt.timedelta(days=1)
        start = dt.date.fromisoformat(since) if since else end - dt.timedelta(days=7)
    except ValueError:
        raise InvalidInput("since and until must be dates YYYY-MM-DD") from None
    if start >= end:
        raise InvalidInput(f"since ({start}) must be before until ({end})")
    if (end - start).days > MAX_DAYS:
        raise InvalidInput(f"a report covers at most {MAX_DAYS} days; ask for a shorter window")
    return (dt.datetime.combine(start, dt.time(), CST), dt.datetime.combine(end, dt.time(), CST))


def create_audit_router(log: AuditLog) -> APIRouter:
    router = APIRouter()

    @router.get("/api/audit/report")
    async def report(since: str | None = None, until: str | None = None) -> dict[str, Any]:
        start, end = report_window(since, until)
        rows = await asyncio.to_thread(log.exchanges, start, end)
        return build_report(rows, since=start, until=end)

    @router.get("/api/audit/tree-head")
    async def tree_head() -> dict[str, Any]:
        sth = await asyncio.to_thread(log.latest_tree_head)
        if sth is None:
            raise NotFound("the gateway has not signed a tree head yet")
        return {"tree_size": sth.tree_size, "root_hash": sth.root_hash.hex(),
                "timestamp_ms": sth.timestamp_ms,
                "signature": base64.b64encode(sth.signature).decode(),
                "signer_cert": sth.signer_cert}

    @router.get("/fhir/AuditEvent/{leaf}")
    async def audit_event(leaf: int) -> JSONResponse:
        found = await asyncio.to_thread(log.leaves, leaf, leaf + 1)
        if not found:
            raise NotFound(f"the audit log has no leaf {leaf}")
        return JSONResponse(json.loads(found[0].leaf), media_type="application/fhir+json")

    @router.get("/api/audit/proof/{leaf}")
    async def proof(leaf: int, tree_size: int | None = None) -> dict[str, Any]:
        size = tree_size or (await asyncio.to_thread(log.head)).tree_size
        if not 0 <= leaf < size:
            raise InvalidInput(f"leaf {leaf} is not in a tree of {size} leaves")
        path = await asyncio.to_thread(log.inclusion_proof, leaf, size)
        [stored] = await asyncio.to_thread(log.leaves, leaf, leaf + 1)
        return {"leaf_index": leaf, "tree_size": size, "leaf_hash": stored.leaf_hash.hex(),
                "audit_path": [h.hex() for h in path]}

    return router
