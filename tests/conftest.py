"""Shared fixtures: a real consortium PKI, synthetic site data, and running gateways and
nodes on loopback ports with mutual TLS (no mocks of gRPC or TLS anywhere)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509

from federation.gateway.app import RunningGateway, start_gateway
from federation.nodes.agent import RunningNode, start_node
from federation.security.ca import CertificateAuthority, init_ca
from federation.security.identity import normalize_serial
from federation.security.tls import TlsMaterial
from federation.settings import (
    GatewaySettings,
    NodeSettings,
    SiteEntry,
    TlsSettings,
)
from federation.synth import ConsortiumManifest, generate_consortium

SITE_TIERS = {"city-1": "city", "county-a": "county", "county-b": "county",
              "township-a1": "township", "township-a2": "township", "township-b1": "township"}


@dataclass(frozen=True)
class Pki:
    root: Path
    ca: CertificateAuthority

    def tls(self, name: str) -> TlsSettings:
        folder = self.root / name
        return TlsSettings(cert=folder / f"{name}.crt", key=folder / f"{name}.key",
                           ca=self.root / "ca" / "ca.crt", crl=self.root / "ca" / "crl.pem")

    def material(self, name: str) -> TlsMaterial:
        """Read as-is, without load()'s checks, so that tests can present a foreign
        or expired certificate to a server and watch the server refuse it."""
        t = self.tls(name)
        return TlsMaterial(ca_pem=t.ca.read_bytes(), cert_pem=t.cert.read_bytes(),
                           key_pem=t.key.read_bytes())


def _make_pki(root: Path) -> Pki:
    ca = init_ca(root / "ca", consortium="Test Consortium")
    ca.issue_gateway(root / "gateway")
    ca.issue_operator("tester", root / "tester")
    for site, tier in SITE_TIERS.items():
        ca.issue_node(site, tier, root / site)
    ca.issue_node("ghost-9", "county", root / "ghost-9")          # not in the registry
    ca.issue_node("county-b", "township", root / "wrong-tier")     # registry says county
    now = dt.datetime.now(dt.UTC)
    ca.issue_node("county-a", "county", root / "expired",
                  not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    foreign = init_ca(root / "foreign-ca", consortium="Some Other Consortium")
    foreign.issue_node("county-a", "county", root / "foreign")
    return Pki(root, ca)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One consortium CA for the session. Tests that revoke use ``private_pki``."""
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def private_pki(tmp_path: Path) -> Pki:
    return _make_pki(tmp_path / "pki")


@pytest.fixture(scope="session")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> ConsortiumManifest:
    return generate_consortium(tmp_path_factory.mktemp("consortium"), seed=7, people=60)


def gateway_settings(pki: Pki, db_url: str, manifest: ConsortiumManifest, **over) -> GatewaySettings:
    sites = tuple(SiteEntry(s.site_id, s.name, s.tier, s.parent_site_id) for s in manifest.sites)
    base = GatewaySettings(
        database_url=db_url, grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
        tls=pki.tls("gateway"), sites=sites, heartbeat_interval_ms=200,
        unreachable_after_ms=1000, search_deadline_ms=3000, inbox_poll_ms=100,
        signin_rate_per_minute=600.0,     # tests sign in often from one loopback address
        privacy_keyring=pki.root / "privacy-keys.json",
    )
    return replace(base, **over)


def node_settings(pki: Pki, manifest: ConsortiumManifest, site_id: str, gateway_port: int,
                  state_dir: Path, *, cert_name: str | None = None) -> NodeSettings:
    spec = next(s for s in manifest.sites if s.site_id == site_id)
    return NodeSettings(
        site_id=site_id, listen="127.0.0.1:0", gateway=f"127.0.0.1:{gateway_port}",
        tls=pki.tls(cert_name or site_id),
        source=spec.source_settings(),
        state_dir=state_dir / site_id, backoff_initial_ms=50, backoff_max_ms=400,
    )


@pytest.fixture
async def gateway(pki: Pki, consortium: ConsortiumManifest, tmp_path: Path
                  ) -> AsyncIterator[RunningGateway]:
    gw = await start_gateway(gateway_settings(pki, f"sqlite:///{tmp_path}/gateway.db", consortium))
    yield gw
    await gw.stop(0.2)


@pytest.fixture
async def start_nodes(pki: Pki, consortium: ConsortiumManifest, tmp_path: Path
                      ) -> AsyncIterator[Callable[..., object]]:
    """``await start_nodes(gateway, "county-a", ...)`` → running nodes, all connected."""
    started: list[RunningNode] = []

    async def start(gw: RunningGateway, *site_ids: str) -> list[RunningNode]:
        import asyncio

        nodes = []
        for site_id in site_ids:
            node = await start_node(node_settings(pki, consortium, site_id, gw.grpc_port, tmp_path))
            started.append(node)
            nodes.append(node)
        await asyncio.wait_for(
            asyncio.gather(*(n.link.status.connected_event.wait() for n in nodes)), timeout=10)
        return nodes

    yield start
    for node in started:
        await node.stop(0.1)


# ---------------------------------------------------------------------------- TLS


def served_serial(port: int, client: TlsSettings) -> str:
    """The serial of the certificate a server on loopback ``port`` presents to a fresh
    TLS connection made with the ``client``'s files (blocking: run it in a thread when the
    server shares this event loop)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=client.ca)
    context.load_cert_chain(client.cert, client.key)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return normalize_serial(x509.load_der_x509_certificate(der).serial_number)


# ---------------------------------------------------------------------------- sign-in

def staff_token(gateway: RunningGateway, pki: Pki, *, site: str = "county-a",
                user: str = "wang.li", roles: tuple[str, ...] = ("doctor",),
                scopes: tuple[str, ...] = ("user/*.*",), purpose: str = "TREAT",
                reason: str | None = None) -> str:
    """An access token for a site's staff member, obtained the real way: the site's node
    certificate signs the assertion, the gateway's /auth/token exchanges it."""
    import httpx

    from federation.security.tokens import JWT_BEARER_GRANT, sign_staff_assertion
    t = pki.tls(site)
    assertion = sign_staff_assertion(t.key.read_bytes(), t.cert.read_bytes(), user_id=user,
                                     roles=roles, scopes=scopes, purpose=purpose,
                                     reason=reason)
    answer = httpx.post(f"http://127.0.0.1:{gateway.http_port}/auth/token", timeout=10,
                        data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def admin_token(gateway: RunningGateway, *, user: str = "admin",
                roles: tuple[str, ...] = ("regional-admin",), purpose: str = "HOPERAT",
                scopes: tuple[str, ...] = ("user/*.*",)) -> str:
    """A consortium account's access token (password grant; the account is created)."""
    import httpx

    from federation.security.accounts import hash_password
    password = "correct horse battery staple"
    gateway.store.put_account(user, roles, hash_password(password), dt.datetime.now(dt.UTC))
    answer = httpx.post(f"http://127.0.0.1:{gateway.http_port}/auth/token", timeout=10,
                        data={"grant_type": "password", "username": user,
                              "password": password, "purpose_of_use": purpose,
                              "scope": " ".join(scopes)})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
