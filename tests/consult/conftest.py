"""A running consortium for consult tests: a gateway and three nodes (county-a and
township-a1 request, city-1 is the hub) over mutual TLS on loopback, each node serving a
studies folder, the EMPI linked from their feeds, and staff with person certificates."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import pytest_asyncio

from federation.consult.client import ConsultClient
from federation.gateway.app import start_gateway
from federation.nodes.agent import start_node
from tests.conftest import Pki, gateway_settings, node_settings
from tests.referral.conftest import Consortium

#: user → (site, staff roles)
STAFF = {
    "cdr-wang": ("county-a", ["doctor"]),
    "cdr-ma": ("township-a1", ["doctor"]),
    "csp-li": ("city-1", ["specialist"]),
    "csp-sun": ("city-1", ["specialist"]),
    "csp-zhou": ("city-1", ["doctor"]),
    "csp-rogue": ("county-a", ["specialist"]),
}
SITES = ("county-a", "city-1", "township-a1")


@pytest.fixture(scope="session")
def consult_pki(pki: Pki) -> Pki:
    for user, (site, roles) in STAFF.items():
        if not (pki.root / user / f"{user}.crt").exists():
            pki.ca.issue_person(user, site, roles, pki.root / user)
    return pki


@dataclass
class ConsultWorld(Consortium):
    studies: dict[str, Path] = field(default_factory=dict)
    consult_clients: list[ConsultClient] = field(default_factory=list)

    def consult(self, user: str, practitioner: tuple[str, str] | None = None) -> ConsultClient:
        c = ConsultClient(self.address, self.pki.material(user), practitioner=practitioner)
        self.consult_clients.append(c)
        return c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(consult_pki, consortium, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("consult")
    gw = await start_gateway(gateway_settings(consult_pki, f"sqlite:///{root}/gateway.db",
                                              consortium, search_deadline_ms=10_000,
                                              # a busy 2-core machine: no false alarms
                                              heartbeat_interval_ms=500,
                                              unreachable_after_ms=15_000,
                                              # small, so that a test can pass it
                                              consult_view_max_bytes=2 * 1024 * 1024))
    nodes, studies = {}, {}
    for site in SITES:
        studies[site] = root / "studies" / site
        studies[site].mkdir(parents=True)
        settings = replace(node_settings(consult_pki, consortium, site, gw.grpc_port,
                                         root / "state"), studies_dir=studies[site])
        nodes[site] = await start_node(settings)
    await asyncio.wait_for(asyncio.gather(
        *(n.link.status.connected_event.wait() for n in nodes.values())), timeout=30)
    w = ConsultWorld(gw, nodes, consult_pki, studies=studies)
    for _ in range(1200):
        if all(w.linked(site) for site in SITES):
            break
        await asyncio.sleep(0.1)
    assert all(w.linked(site) for site in SITES), "the EMPI did not link every site"
    yield w
    for client in w.consult_clients:
        await client.close()
    for node in nodes.values():
        await node.stop(0.1)
    await gw.stop(0.2)
