"""Two gateway replicas on one PostgreSQL: nothing either needs lives only in the other.

A node connects to replica A; a tool searches through replica B, which dials the node
from the endpoint A stored; work queued through B reaches the node's stream on A.
"""

from __future__ import annotations

import asyncio

import pytest

from federation.client import GatewayClient
from federation.gateway.app import start_gateway
from federation.nodes.model import PatientQuery
from tests.conftest import gateway_settings
from tests.pg_util import throwaway_database

pytestmark = pytest.mark.postgres


async def test_replicas_share_registry_search_and_inbox(pki, consortium, start_nodes):
    with throwaway_database(prefix="fed_gw") as url:
        a = await start_gateway(gateway_settings(pki, url, consortium))
        b = await start_gateway(gateway_settings(pki, url, consortium))
        try:
            (node,) = await start_nodes(a, "county-a")
            async with GatewayClient(f"127.0.0.1:{b.grpc_port}", pki.material("tester")) as c:
                answer = await c.search(PatientQuery(gender="female"), site_ids=["county-a"])
            assert [s.site_id for s in answer.results] == ["county-a"]
            assert answer.results[0].patients, "replica B reached the node registered on A"
            queued = await b.inbox.enqueue("county-a", "referral", b"{}", source_site="city-1")
            for _ in range(100):                       # A's stream polls every 100 ms
                if [i.item_id for i in node.inbox.items()] == [queued.item_id]:
                    break
                await asyncio.sleep(0.05)
            assert [i.item_id for i in node.inbox.items()] == [queued.item_id]
            rows = a.store.list_exchanges(limit=10)    # B's exchange, visible from A
            assert any(r.correlation_id == answer.correlation_id for r in rows)
        finally:
            await b.stop(0.1)
            await a.stop(0.1)
