"""Prepare the demo's work directory: CA, certificates, site data, configuration files.

Idempotent: what exists (CA, certificates, generated data) is reused; configuration
files are rewritten each run because they carry the freshly chosen loopback ports.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path

from federation.security.ca import CertificateAuthority, init_ca
from federation.synth import ConsortiumManifest, SiteSpec, generate_consortium, load_manifest

__all__ = ["DemoLayout", "prepare_workspace", "free_ports"]

OPERATOR = "demo-tour"
#: the tour's staff: user → (site, staff roles); each gets a person certificate
STAFF = {"dr-wang": ("county-a", ("doctor",)), "dr-li": ("city-1", ("specialist",)),
         "dr-zhang": ("township-a1", ("doctor",))}


@dataclass(frozen=True, slots=True)
class DemoLayout:
    workdir: Path
    manifest: ConsortiumManifest
    gateway_config: Path
    node_configs: dict[str, Path]
    grpc_address: str
    http_url: str
    operator_cert: Path
    operator_key: Path
    ca_cert: Path
    logs: Path
    staff: dict[str, Path]           # user → their certificate folder (person certs)


#: below Linux's ephemeral range (32768+), so that a port we pick is not handed to some
#: other process's outgoing connection between our check and the server's bind
PORT_RANGE = (20000, 32000)


def free_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """Distinct loopback ports that are free right now, outside the ephemeral range."""
    rng = rng or random.Random()
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", rng.randrange(*PORT_RANGE)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def prepare_workspace(workdir: Path, *, people: int, seed: int = 20261121) -> DemoLayout:
    workdir.mkdir(parents=True, exist_ok=True)
    pki = workdir / "pki"
    authority = init_ca(pki / "ca", consortium="Demo Regional Consortium")
    data = workdir / "data"
    if (data / "consortium.json").exists():
        manifest = load_manifest(data)
    else:
        manifest = generate_consortium(data, seed=seed, people=people)

    _issue_all(authority, pki, manifest.sites)
    ports = free_ports(2 + len(manifest.sites))
    grpc_address, http_port = f"127.0.0.1:{ports[0]}", ports[1]
    gateway_config = workdir / "gateway.toml"
    gateway_config.write_text(_gateway_toml(manifest.sites, grpc_address, http_port))
    node_configs = {}
    for site, port in zip(manifest.sites, ports[2:], strict=True):
        path = workdir / "sites" / f"{site.site_id}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_site_toml(site, port, grpc_address, workdir))
        node_configs[site.site_id] = path
        (workdir / "studies" / site.site_id).mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    return DemoLayout(
        workdir=workdir, manifest=manifest, gateway_config=gateway_config,
        node_configs=node_configs, grpc_address=grpc_address,
        http_url=f"http://127.0.0.1:{http_port}",
        operator_cert=pki / OPERATOR / f"{OPERATOR}.crt",
        operator_key=pki / OPERATOR / f"{OPERATOR}.key",
        ca_cert=pki / "ca" / "ca.crt", logs=logs,
        staff={user: pki / user for user in STAFF},
    )


def _issue_all(authority: CertificateAuthority, pki: Path, sites: tuple[SiteSpec, ...]) -> None:
    if not (pki / "gateway" / "gateway.crt").exists():
        authority.issue_gateway(pki / "gateway")
    if not (pki / OPERATOR / f"{OPERATOR}.crt").exists():
        authority.issue_operator(OPERATOR, pki / OPERATOR)
    for site in sites:
        if not (pki / site.site_id / f"{site.site_id}.crt").exists():
            authority.issue_node(site.site_id, site.tier, pki / site.site_id)
    members = {s.site_id for s in sites}
    for user, (site_id, roles) in STAFF.items():
        if site_id in members and not (pki / user / f"{user}.crt").exists():
            authority.issue_person(user, site_id, roles, pki / user)


def _q(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _gateway_toml(sites: tuple[SiteSpec, ...], grpc_address: str, http_port: int) -> str:
    lines = [
        "# written by `federation demo` on every run (ports change); edit a copy instead",
        f"database_url = {_q('sqlite:///' + 'gateway.db')}",
        f"grpc_listen = {_q(grpc_address)}",
        f"http_listen = {_q(f'127.0.0.1:{http_port}')}",
        "heartbeat_interval_ms = 2000",
        "unreachable_after_ms = 6000",
        "",
        "[tls]",
        'cert = "pki/gateway/gateway.crt"',
        'key = "pki/gateway/gateway.key"',
        'ca = "pki/ca/ca.crt"',
        'crl = "pki/ca/crl.pem"',
    ]
    for site in sites:
        lines += ["", "[[sites]]", f"id = {_q(site.site_id)}", f"name = {_q(site.name)}",
                  f"tier = {_q(site.tier)}"]
        if site.parent_site_id:
            lines.append(f"parent = {_q(site.parent_site_id)}")
    return "\n".join(lines) + "\n"


def _site_toml(site: SiteSpec, port: int, gateway: str, workdir: Path) -> str:
    rel = Path("..")
    source = site.source_path.relative_to(workdir)
    lines = [
        "# written by `federation demo` on every run (ports change); edit a copy instead",
        f"site_id = {_q(site.site_id)}",
        f"listen = {_q(f'127.0.0.1:{port}')}",
        f"gateway = {_q(gateway)}",
        f"state_dir = {_q((rel / 'state' / site.site_id).as_posix())}",
        f"studies_dir = {_q((rel / 'studies' / site.site_id).as_posix())}",
        "backoff_initial_ms = 300",
        "backoff_max_ms = 3000",
        "",
        "[tls]",
        f"cert = {_q((rel / 'pki' / site.site_id / f'{site.site_id}.crt').as_posix())}",
        f"key = {_q((rel / 'pki' / site.site_id / f'{site.site_id}.key').as_posix())}",
        f"ca = {_q((rel / 'pki' / 'ca' / 'ca.crt').as_posix())}",
        f"crl = {_q((rel / 'pki' / 'ca' / 'crl.pem').as_posix())}",
        "",
        "[source]",
        f"kind = {_q(site.source_kind)}",
        f"path = {_q((rel / source).as_posix())}",
    ]
    if site.mapping:
        lines.append(f"mapping = {_q(site.mapping)}")
    for extra in site.extra_sources:
        lines += ["", "[[source.extra]]", f"kind = {_q(extra.kind)}",
                  f"path = {_q((rel / extra.path.relative_to(workdir)).as_posix())}"]
    return "\n".join(lines) + "\n"
