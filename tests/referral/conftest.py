"""A running consortium for referral tests: a gateway, four nodes (county-a, city-1,
township-a1, county-b) over mutual TLS on loopback, the EMPI linked from their feeds, and
staff with person certificates from the consortium CA."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text

from federation.gateway.app import RunningGateway, start_gateway
from federation.nodes.agent import RunningNode, start_node
from federation.referral.client import ReferralClient
from federation.referral.service import NewReferral
from tests.conftest import Pki, gateway_settings, node_settings

#: user → (site, staff roles)
STAFF = {
    "dr-wang": ("county-a", ["doctor"]),
    "dr-li": ("city-1", ["specialist"]),
    "dr-zhou": ("city-1", ["doctor"]),
    "nurse-chen": ("city-1", ["nurse"]),
    "dr-ma": ("township-a1", ["doctor"]),
    "dr-xu": ("county-b", ["doctor"]),
    "admin-zhao": ("city-1", ["regional-admin"]),
}
SITES = ("county-a", "city-1", "township-a1", "county-b")


@pytest.fixture(scope="session")
def staff_pki(pki: Pki) -> Pki:
    for user, (site, roles) in STAFF.items():
        if not (pki.root / user / f"{user}.crt").exists():
            pki.ca.issue_person(user, site, roles, pki.root / user)
    return pki


@dataclass
class Consortium:
    gateway: RunningGateway
    nodes: dict[str, RunningNode]
    pki: Pki
    clients: list[ReferralClient] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.grpc_port}"

    def client(self, user: str, practitioner: tuple[str, str] | None = None) -> ReferralClient:
        c = ReferralClient(self.address, self.pki.material(user), practitioner=practitioner)
        self.clients.append(c)
        return c

    def linked(self, site: str) -> list[str]:
        with self.gateway.store.engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT record_id FROM identity_record WHERE site_id = :s AND state = 'linked' "
                "ORDER BY record_id"), {"s": site}).scalars())

    def shared(self, a: str, b: str) -> tuple[str, str]:
        """(record at a, record at b) of one EMPI person known at both sites."""
        with self.gateway.store.engine.connect() as conn:
            row = conn.execute(text(
                "SELECT x.record_id, y.record_id FROM identity_record x JOIN identity_record y "
                "ON x.person_id = y.person_id WHERE x.site_id = :a AND y.site_id = :b "
                "AND x.state = 'linked' AND y.state = 'linked' ORDER BY x.record_id LIMIT 1"),
                {"a": a, "b": b}).first()
        assert row is not None, f"no person is known at both {a} and {b}"
        return row[0], row[1]

    async def inbox(self, site: str, want, timeout: float = 60.0) -> list:
        """Wait until the site's node inbox holds items satisfying ``want(items)``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            items = self.nodes[site].inbox.items()
            if want(items):
                return items
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{site} inbox: {[(i.kind, i.item_id) for i in items]}")
            await asyncio.sleep(0.05)


def about(items, referral_id: str, kind: str | None = None) -> list[dict]:
    """The inbox payloads (parsed) that concern ``referral_id``."""
    out = []
    for item in items:
        body = json.loads(item.payload)
        ids = {body.get("id", "")} | {e["resource"].get("id", "") for e in body.get("entry", [])}
        ids |= {a.get("reference", "").split("/")[-1] for a in body.get("about", [])}
        if referral_id in ids and (kind is None or item.kind == kind):
            out.append(body)
    return out


def bundle(items, referral_id: str, which: str) -> dict | None:
    """The ``referral`` (Task, ServiceRequest, Consent …) or ``packet`` (Task + the
    clinical record) Bundle the inbox holds for ``referral_id``."""
    found = [b for b in about(items, referral_id, "referral")
             if b.get("id") == f"{referral_id}-{which}"]
    assert len(found) <= 1, f"{len(found)} {which} bundles for {referral_id}"
    return found[0] if found else None


def upward(patient_id: str, **over) -> NewReferral:
    fields = dict(patient_id=patient_id, urgency="urgent", direction="upward",
                  target_site="city-1", department="cardiology",
                  reason={"system": "http://hl7.org/fhir/sid/icd-10", "code": "I21.9",
                          "display": "急性心肌梗死"}, notes="chest pain 3 h",
                  consent_method="written")
    return NewReferral(**(fields | over))


async def start_consortium(pki: Pki, consortium, state_dir: Path, db_url: str, **over
                           ) -> Consortium:
    # a generous packet deadline: the machine running the tests may be busy; and a feed
    # pull that failed while the machine was busy is retried in seconds, not in 5 minutes
    gw = await start_gateway(gateway_settings(pki, db_url, consortium, **(
        {"search_deadline_ms": 10_000, "sync_interval_ms": 2_000} | over)))
    nodes = {}
    for site in SITES:
        nodes[site] = await start_node(node_settings(pki, consortium, site, gw.grpc_port,
                                                     state_dir))
    await asyncio.wait_for(asyncio.gather(
        *(n.link.status.connected_event.wait() for n in nodes.values())), timeout=90)
    result = Consortium(gw, nodes, pki)
    for _ in range(1800):  # the archive pulls each feed after registration and links it
        if all(result.linked(site) for site in SITES):
            break
        await asyncio.sleep(0.1)
    assert all(result.linked(site) for site in SITES), "the EMPI did not link every site"
    return result


async def stop_consortium(c: Consortium) -> None:
    for client in c.clients:
        await client.close()
    for node in c.nodes.values():
        await node.stop(0.1)
    await c.gateway.stop(0.2)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def up(staff_pki, consortium, tmp_path_factory: pytest.TempPathFactory):
    """One running consortium for a test module (tests must not depend on each other)."""
    root = tmp_path_factory.mktemp("referral")
    c = await start_consortium(staff_pki, consortium, root / "state",
                               f"sqlite:///{root}/gateway.db")
    yield c
    await stop_consortium(c)
