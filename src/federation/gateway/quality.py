"""Per-site data quality across the consortium, asked of the nodes live.

Each node maps its whole source and reports counts and quarantined records (see
:mod:`federation.nodes.quality`); the gateway gathers them through the same fan-out
as every cross-site call, so unreachable sites are named, and each call is logged.
"""

from __future__ import annotations

import uuid
from typing import Any

from federation.gateway.fanout import Requester, fan_out
from federation.gateway.node_clients import NodeClients
from federation.nodes.quality import QualityReport
from federation.store import GatewayStore

__all__ = ["SiteQuality"]

OPERATION = "NodeAgent/GetQualityReport"


class SiteQuality:
    def __init__(self, store: GatewayStore, clients: NodeClients, *, deadline_ms: int) -> None:
        self._store = store
        self._clients = clients
        self._timeout = deadline_ms / 1000

    async def reports(
        self, requester: Requester, *, site_ids: list[str] | None = None, refresh: bool = False
    ) -> dict[str, Any]:
        correlation_id = uuid.uuid4().hex
        # a full source scan can take longer than a search: allow it a larger deadline
        timeout = self._timeout * (6 if refresh else 2)

        async def call(site_id: str, endpoint: str) -> QualityReport:
            return await self._clients.quality_report(site_id, endpoint, refresh=refresh,
                                                      timeout=timeout)

        done = await fan_out(self._store, requester, OPERATION, call,
                             correlation_id=correlation_id, site_ids=site_ids,
                             purpose="HSYSADMIN", records=lambda r: len(r.quarantined))
        return {
            "correlation_id": correlation_id,
            "sites": [done.answers[s].to_json() for s in sorted(done.answers)],
            "issues": [{"severity": i.severity, "code": i.code, "diagnostics": i.diagnostics,
                        "site_id": i.site_id} for i in done.issues],
        }
