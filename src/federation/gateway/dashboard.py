"""The regional administrator's exchange dashboard, in a shape a chart draws directly.

``GET /api/dashboard/exchanges?days=14`` (1–92) →

.. code-block:: json

    {"since": "…", "until": "…", "days": ["2026-11-17", …],
     "pairs": [{"from": "county-a", "to": "city-1", "exchanges": [3, 0, …],
                "records": [12, 0, …], "total": 3}],
     "referral_turnaround": [{"urgency": "routine", "tasks": 4, "open": 1,
                              "ack_median_min": 12.5, "complete_median_h": 20.1, …}],
     "consult_turnaround": […]}

``days`` are local days (UTC+8, as the audit report counts them) ending today;
``exchanges``/``records`` hold one number per day, aligned with ``days`` (an ECharts
series each). Volume comes from :func:`federation.audit.reports.exchange_volume`,
turnaround from :func:`federation.workflow.turnaround.turnaround` grouped by urgency,
over the tasks created in the window. One exchange-log row per call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

from fastapi import APIRouter, Request

from federation.audit.log import AuditLog
from federation.audit.reports import CST, exchange_volume
from federation.consult.service import WORKFLOW as CONSULT
from federation.gateway.auth_api import requester_of
from federation.gateway.params import int_param, query
from federation.identity.lookup import logged
from federation.referral.service import WORKFLOW as REFERRAL
from federation.store import GatewayStore
from federation.workflow.store import WorkflowStore
from federation.workflow.turnaround import Turnaround, by_urgency, turnaround

__all__ = ["MAX_DAYS", "create_dashboard_router", "volume_series"]

MAX_DAYS = 92


def volume_series(volume: list[dict[str, Any]], days: list[str]) -> list[dict[str, Any]]:
    """:func:`exchange_volume` lines as one series per (from, to), aligned with ``days``,
    busiest pair first."""
    index = {d: i for i, d in enumerate(days)}
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for v in volume:
        if v["day"] not in index:
            continue
        line = pairs.setdefault((v["from"], v["to"]), {
            "from": v["from"], "to": v["to"], "exchanges": [0] * len(days),
            "records": [0] * len(days), "total": 0})
        line["exchanges"][index[v["day"]]] += v["exchanges"]
        line["records"][index[v["day"]]] += v["records"]
        line["total"] += v["exchanges"]
    return sorted(pairs.values(), key=lambda p: (-p["total"], p["from"], p["to"]))


def _by_urgency(lines: list[Turnaround]) -> list[dict[str, Any]]:
    out = []
    for t in lines:
        body = dataclasses.asdict(t)
        del body["site_id"], body["department"]
        out.append({"urgency": t.department, **body})
    return out


def create_dashboard_router(store: GatewayStore, log: AuditLog,
                            workflows: WorkflowStore) -> APIRouter:
    router = APIRouter()

    @router.get("/api/dashboard/exchanges")
    async def exchanges(request: Request) -> dict[str, Any]:
        async with logged(store, requester_of(request), "Dashboard/GetExchanges") as note:
            q = query(request, ("days",))
            n = int_param(q.get("days"), "days", 14, 1, MAX_DAYS)
            now = dt.datetime.now(dt.UTC)
            today = now.astimezone(CST).date()
            first = today - dt.timedelta(days=n - 1)
            since = dt.datetime.combine(first, dt.time(), CST)
            until = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), CST)
            days = [(first + dt.timedelta(days=i)).isoformat() for i in range(n)]
            rows = await asyncio.to_thread(log.exchanges, since, until)
            referrals = await asyncio.to_thread(workflows.all_tasks, REFERRAL, since)
            consults = await asyncio.to_thread(workflows.all_tasks, CONSULT, since)
            note.records = len(rows)
            return {
                "since": since.isoformat(), "until": until.isoformat(), "days": days,
                "pairs": volume_series(exchange_volume(rows, CST), days),
                "referral_turnaround": _by_urgency(turnaround(referrals, now, key=by_urgency)),
                "consult_turnaround": _by_urgency(turnaround(consults, now, key=by_urgency)),
            }

    return router
