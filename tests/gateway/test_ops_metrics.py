"""/metrics carries the consortium's figures read from the store: two replicas on one
PostgreSQL scrape the same node, inbox and EMPI gauges, whichever saw the events."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from federation.gateway.app import start_gateway
from federation.gateway.ops_metrics import FAMILIES, exported_metric_names, store_registry
from tests.conftest import gateway_settings
from tests.pg_util import throwaway_database


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    text = await asyncio.to_thread(get)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _site(metrics, name: str, site_id: str) -> float | None:
    return next((v for (n, labels), v in metrics.items()
                 if n == name and ("site_id", site_id) in labels), None)


@pytest.mark.postgres
async def test_replicas_scrape_the_same_consortium_figures(pki, consortium, start_nodes):
    with throwaway_database(prefix="fed_ops") as url:
        a = await start_gateway(gateway_settings(pki, url, consortium))
        b = await start_gateway(gateway_settings(pki, url, consortium))
        try:
            (node,) = await start_nodes(a, "county-a")
            await b.inbox.enqueue("county-b", "referral", b"{}", source_site="city-1")
            await b.inbox.enqueue("county-b", "consult", b"{}", source_site="city-1")
            await a.registry.flush()
            # on a loaded machine a heartbeat may come late (200 ms apart, 1 s allowed):
            # the node is then briefly unreachable and back with the next one
            for _ in range(50):
                seen = [await _scrape(gw.http_port) for gw in (a, b)]
                if all(_site(m, "federation_node_up", "county-a") == 1 for m in seen):
                    break
                await asyncio.sleep(0.1)
            for metrics in seen:
                assert metrics[("federation_store_up", ())] == 1
                assert _site(metrics, "federation_node_up", "county-a") == 1
                assert _site(metrics, "federation_node_up", "county-b") == 0
                assert _site(metrics, "federation_inbox_pending_items", "county-b") == 2
                assert _site(metrics, "federation_inbox_pending_items", "county-a") == 0
                assert metrics[("federation_empi_review_open", ())] >= 0
            await node.stop(0.1)                     # the node goes away: both see it down
            for _ in range(60):
                metrics = await _scrape(b.http_port)
                if _site(metrics, "federation_node_up", "county-a") == 0:
                    break
                await asyncio.sleep(0.1)
            assert _site(metrics, "federation_node_up", "county-a") == 0
            assert _site(await _scrape(a.http_port), "federation_node_up", "county-a") == 0
        finally:
            await b.stop(0.1)
            await a.stop(0.1)


async def test_sync_gauges_follow_the_archive(gateway, start_nodes):
    await start_nodes(gateway, "township-a1")
    for _ in range(100):
        metrics = await _scrape(gateway.http_port)
        if _site(metrics, "federation_sync_behind_changes", "township-a1") == 0:
            break
        await asyncio.sleep(0.1)
    assert _site(metrics, "federation_sync_behind_changes", "township-a1") == 0
    assert _site(metrics, "federation_sync_lag_seconds", "township-a1") == 0
    assert _site(metrics, "federation_sync_last_pull_age_seconds", "township-a1") < 60
    assert _site(metrics, "federation_sync_behind_changes", "city-1") is None  # never pulled


def test_a_store_that_cannot_be_read_scrapes_as_store_down():
    def broken():
        raise OSError("database gone")

    text = generate_latest(store_registry(broken)).decode()
    assert "federation_store_up 0.0" in text
    assert "federation_node_up{" not in text


def test_every_store_gauge_is_in_the_exported_names():
    names = exported_metric_names()
    assert set(FAMILIES) <= names
    assert {"federation_rpc_seconds_bucket", "federation_exchanges_total",
            "federation_nodes"} <= names
