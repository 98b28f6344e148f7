"""The ``federation`` command: CA, registry, gateway, node agent, synthetic data, demo.

Each command is a thin shell over a library function; failures the user can fix come
out as one plain sentence (exit code 2) instead of a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from federation import __version__
from federation._cli_util import friendly
from federation.errors import FederationError

__all__ = ["main", "cli"]

TIER_CHOICE = click.Choice(["township", "county", "city"])


@click.group()
@click.version_option(__version__, prog_name="federation")
def cli() -> None:
    """Federation gateway of a regional medical consortium (医联体)."""


# ---------------------------------------------------------------------------- ca


@cli.group()
def ca() -> None:
    """The consortium certificate authority: every node, gateway and tool needs a cert."""


@ca.command("init")
@click.option("--dir", "ca_dir", type=click.Path(path_type=Path), default=Path("pki/ca"),
              show_default=True, help="Where the CA key, certificate and CRL live.")
@click.option("--consortium", default="Demo Regional Consortium", show_default=True)
@friendly
def ca_init(ca_dir: Path, consortium: str) -> None:
    """Create the consortium CA (does nothing if it exists)."""
    from federation.security.ca import init_ca

    existed = (ca_dir / "ca.crt").exists()
    authority = init_ca(ca_dir, consortium=consortium)
    verb = "uses the existing" if existed else "created a new"
    click.echo(f"{ca_dir}: {verb} CA '{authority.subject_cn}' (fingerprint {authority.fingerprint[:16]}…)")


@ca.command("issue")
@click.option("--ca-dir", type=click.Path(path_type=Path), default=Path("pki/ca"), show_default=True)
@click.option("--site", help="Site id for a node certificate (e.g. county-a), or the site a "
              "--person works at.")
@click.option("--tier", type=TIER_CHOICE, help="The site's tier (node certificates).")
@click.option("--gateway", "gateway_cert", is_flag=True, help="Issue the gateway's certificate.")
@click.option("--operator", help="Issue an operator (tool) certificate with this name.")
@click.option("--person", help="Issue a member of staff's certificate for this user id "
              "(with --site and --staff-role), e.g. for `federation referral`.")
@click.option("--staff-role", "staff_roles", multiple=True,
              type=click.Choice(["doctor", "specialist", "nurse", "site-admin", "regional-admin"]),
              help="The person's staff role at the site (repeatable).")
@click.option("--host", "hosts", multiple=True,
              help="DNS name or IP the holder serves on (repeatable); localhost/127.0.0.1 by default.")
@click.option("--days", type=int, default=397, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (default pki/<name>).")
@friendly
def ca_issue(ca_dir: Path, site: str | None, tier: str | None, gateway_cert: bool,
             operator: str | None, person: str | None, staff_roles: tuple[str, ...],
             hosts: tuple[str, ...], days: int, out: Path | None) -> None:
    """Issue a node, gateway, operator or person (staff) certificate signed by the
    consortium CA.

    \b
    federation ca issue --site county-a --tier county           # a node
    federation ca issue --person dr-wang --site county-a --staff-role doctor
    """
    from federation.security.ca import CertificateAuthority

    if person:
        if not site or not staff_roles or tier or gateway_cert or operator:
            raise click.UsageError("--person needs --site and at least one --staff-role "
                                   "(and none of --tier, --gateway, --operator)")
        authority = CertificateAuthority.load(ca_dir)
        issued = authority.issue_person(person, site, staff_roles, out or Path("pki") / person,
                                        days=days)
        click.echo(f"issued {issued.cert_path} for {person} at {site} "
                   f"({', '.join(staff_roles)}; serial {issued.serial}, valid until "
                   f"{issued.not_after:%Y-%m-%d})")
        return
    chosen = [bool(site), gateway_cert, bool(operator)]
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one of --site (with --tier), --gateway, "
                               "--operator, --person (with --site)")
    authority = CertificateAuthority.load(ca_dir)
    kwargs: dict[str, Any] = {"days": days}
    if hosts:
        kwargs["hosts"] = hosts
    if site:
        if not tier:
            raise click.UsageError("--site needs --tier township|county|city")
        issued = authority.issue_node(site, tier, out or Path("pki") / site, **kwargs)
    elif gateway_cert:
        issued = authority.issue_gateway(out or Path("pki") / "gateway", **kwargs)
    else:
        issued = authority.issue_operator(operator, out or Path("pki") / operator, **kwargs)
    click.echo(f"issued {issued.cert_path} (serial {issued.serial}, valid until "
               f"{issued.not_after:%Y-%m-%d})")


@ca.command("rotate-node")
@click.argument("site_id")
@click.option("--ca-dir", type=click.Path(path_type=Path), default=Path("pki/ca"), show_default=True)
@click.option("--config", type=click.Path(path_type=Path, exists=True),
              help="The node's site.toml: write over its tls.cert and tls.key.")
@click.option("--cert", "cert_path", type=click.Path(path_type=Path),
              help="The node's certificate file (default pki/SITE_ID/SITE_ID.crt).")
@click.option("--key", "key_path", type=click.Path(path_type=Path),
              help="The node's key file (default pki/SITE_ID/SITE_ID.key).")
@click.option("--tier", type=TIER_CHOICE, help="Default: the tier of the site's last certificate.")
@click.option("--host", "hosts", multiple=True,
              help="DNS name or IP (repeatable); default: those of the current certificate.")
@click.option("--days", type=int, default=397, show_default=True)
@friendly
def ca_rotate_node(site_id: str, ca_dir: Path, config: Path | None, cert_path: Path | None,
                   key_path: Path | None, tier: str | None, hosts: tuple[str, ...],
                   days: int) -> None:
    """Issue a fresh key and certificate for a site's node and write them over its files.

    A running node takes them up within seconds, without a restart; the previous
    certificate keeps working until it expires or is revoked.

    \b
    federation ca rotate-node county-a --config /etc/federation/site.toml
    federation ca rotate-node county-a --cert pki/county-a/county-a.crt --key pki/county-a/county-a.key
    """
    from federation.security.ca import CertificateAuthority
    from federation.security.identity import identity_from_pem

    if config is not None:
        if cert_path or key_path:
            raise click.UsageError("give either --config or --cert/--key, not both")
        from federation.settings import load_node_settings

        settings = load_node_settings(config)
        if settings.site_id != site_id:
            raise click.UsageError(f"{config} is the node of site '{settings.site_id}', "
                                   f"not '{site_id}'")
        cert_path, key_path = settings.tls.cert, settings.tls.key
    elif (cert_path is None) != (key_path is None):
        raise click.UsageError("give both --cert and --key (or --config)")
    cert_path = cert_path or Path("pki") / site_id / f"{site_id}.crt"
    key_path = key_path or Path("pki") / site_id / f"{site_id}.key"
    previous = None
    if cert_path.is_file():
        with contextlib.suppress(FederationError):
            previous = identity_from_pem(cert_path.read_bytes())
    issued = CertificateAuthority.load(ca_dir).rotate_node(
        site_id, cert_path, key_path, tier=tier, hosts=hosts or None, days=days)
    click.echo(f"rotated the node certificate of {site_id}: serial {issued.serial} (valid until "
               f"{issued.not_after:%Y-%m-%d}) written to {issued.cert_path} and {issued.key_path}")
    click.echo("a running node takes it up within seconds, without a restart")
    if previous is not None and previous.serial != issued.serial:
        click.echo(f"the previous certificate (serial {previous.serial}) stays valid until "
                   f"{previous.not_after:%Y-%m-%d}; once the gateway shows the new serial, "
                   f"retire it with: federation ca revoke --serial {previous.serial} "
                   f"--reason superseded")


@ca.command("revoke")
@click.option("--ca-dir", type=click.Path(path_type=Path), default=Path("pki/ca"), show_default=True)
@click.option("--serial", help="Serial number (hex) of the certificate to revoke.")
@click.option("--site", help="Revoke every certificate issued to this site.")
@click.option("--reason", default="unspecified", show_default=True,
              type=click.Choice(["unspecified", "key_compromise", "affiliation_changed",
                                 "superseded", "cessation_of_operation"]))
@friendly
def ca_revoke(ca_dir: Path, serial: str | None, site: str | None, reason: str) -> None:
    """Revoke certificates; gateways and nodes pick up the new CRL within seconds."""
    from federation.security.ca import CertificateAuthority

    if bool(serial) == bool(site):
        raise click.UsageError("give exactly one of --serial or --site")
    revoked = CertificateAuthority.load(ca_dir).revoke(serial, site_id=site, reason=reason)
    for entry in revoked:
        click.echo(f"revoked serial {entry.serial} ({entry.kind} {entry.name})")
    if not revoked:
        raise FederationError("no matching certificate was found in the CA index")


@ca.command("list")
@click.option("--ca-dir", type=click.Path(path_type=Path), default=Path("pki/ca"), show_default=True)
@friendly
def ca_list(ca_dir: Path) -> None:
    """List issued certificates."""
    from federation.security.ca import CertificateAuthority

    for entry in CertificateAuthority.load(ca_dir).list_issued():
        state = f"revoked {entry.revoked_at:%Y-%m-%d}" if entry.revoked_at else "valid"
        click.echo(f"{entry.serial}  {entry.kind:<8} {entry.name:<16} {entry.tier or '':<9} "
                   f"until {entry.not_after:%Y-%m-%d}  {state}")


# ---------------------------------------------------------------------------- gateway


def _gateway_settings(config: Path | None) -> Any:
    from federation.settings import load_gateway_settings

    return load_gateway_settings(config)


def _open_store(config: Path | None) -> Any:
    """The gateway's store, migrated to the newest schema."""
    from federation.store import GatewayStore, make_engine, upgrade

    engine = make_engine(_gateway_settings(config).database_url)
    upgrade(engine)
    return GatewayStore(engine)


@cli.group()
def gateway() -> None:
    """The central gateway."""


@gateway.command("serve")
@click.option("--config", type=click.Path(path_type=Path, exists=True), help="gateway.toml")
@friendly
def gateway_serve(config: Path | None) -> None:
    """Run the gateway (gRPC + HTTP) until Ctrl-C."""
    from federation.gateway.app import serve
    from federation.logs import configure_logging

    settings = _gateway_settings(config)
    configure_logging(settings.log_level, component="gateway", fmt=settings.log_format)
    asyncio.run(serve(settings))


@cli.group()
def db() -> None:
    """The gateway's store."""


@db.command("upgrade")
@click.option("--config", type=click.Path(path_type=Path, exists=True), help="gateway.toml")
@friendly
def db_upgrade(config: Path | None) -> None:
    """Apply database migrations up to the newest."""
    from federation.store import current_revision, make_engine, upgrade

    engine = make_engine(_gateway_settings(config).database_url)
    upgrade(engine)
    click.echo(f"database at revision {current_revision(engine)}")


@db.command("backup")
@click.option("--config", type=click.Path(path_type=Path, exists=True),
              help="gateway.toml: back up the gateway's SQLite store.")
@click.option("--file", "sqlite_file", type=click.Path(path_type=Path, exists=True),
              help="Any SQLite file instead (a node's inbox.sqlite or feed.sqlite).")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@friendly
def db_backup(config: Path | None, sqlite_file: Path | None, out: Path) -> None:
    """Online, consistent copy of a SQLite store (PostgreSQL: pg_dump, see deploy/BACKUP.md)."""
    from federation.store.backup import backup_sqlite, sqlite_path

    if sqlite_file is None:
        sqlite_file = sqlite_path(_gateway_settings(config).database_url)
    written = backup_sqlite(sqlite_file, out)
    click.echo(f"backed up {sqlite_file} to {written} ({written.stat().st_size} bytes)")


@cli.group()
def site() -> None:
    """The consortium registry (which sites are members)."""


@site.command("add")
@click.option("--config", type=click.Path(path_type=Path, exists=True), help="gateway.toml")
@click.option("--id", "site_id", required=True)
@click.option("--name", required=True)
@click.option("--tier", type=TIER_CHOICE, required=True)
@click.option("--parent", help="The site this one refers upward to.")
@friendly
def site_add(config: Path | None, site_id: str, name: str, tier: str, parent: str | None) -> None:
    """Add (or update) a member site."""
    _open_store(config).upsert_site(site_id, name, tier, parent)
    click.echo(f"site {site_id} ({tier}) is a member")


@site.command("list")
@click.option("--config", type=click.Path(path_type=Path, exists=True), help="gateway.toml")
@friendly
def site_list(config: Path | None) -> None:
    """List member sites and their nodes' state."""
    for s, node in _open_store(config).consortium_view():
        state = node.state if node else "no node"
        click.echo(f"{s.site_id:<14} {s.tier:<9} {state:<12} {s.name}")


@site.command("quality")
@click.option("--gateway-url", default="http://127.0.0.1:8080", show_default=True,
              help="The gateway's HTTP address.")
@click.option("--site", "site_id", help="Only this site.")
@click.option("--refresh", is_flag=True, help="Make each node rescan its source now.")
@click.option("--show", type=int, default=10, show_default=True,
              help="Quarantined records to list per site.")
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's JSON as is.")
@click.option("--token-file", type=click.File("r"), required=True,
              help="A file holding a site or regional administrator's access token "
                   "(`federation token get … > FILE`, or '-' for standard input).")
@friendly
def site_quality(gateway_url: str, site_id: str | None, refresh: bool, show: int,
                 as_json: bool, token_file: Any) -> None:
    """Per-site data quality: mapped records, quarantined records and why."""
    from federation.gateway.quality_view import fetch_quality, print_quality
    from federation.security.token_cli import read_token

    report = fetch_quality(gateway_url, token=read_token(token_file), site_id=site_id,
                           refresh=refresh)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_quality(report, show=show)


cli.add_command(site, name="sites")


# ---------------------------------------------------------------------------- node


@cli.group()
def node() -> None:
    """A site's node agent."""


@node.command("serve")
@click.option("--config", type=click.Path(path_type=Path, exists=True), required=True,
              help="site.toml")
@friendly
def node_serve(config: Path) -> None:
    """Serve this site's data to the gateway until Ctrl-C."""
    from federation.logs import configure_logging
    from federation.nodes.agent import serve_node
    from federation.settings import load_node_settings

    settings = load_node_settings(config)
    configure_logging(settings.log_level, component=f"node:{settings.site_id}",
                      fmt=settings.log_format)
    asyncio.run(serve_node(settings))


@node.command("doctor")
@click.option("--config", type=click.Path(path_type=Path, exists=True), required=True,
              help="site.toml")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for the gateway at each step.")
@friendly
def node_doctor(config: Path, timeout: float) -> None:
    """Check this site's set-up (certificate, gateway, sources, mapping, state, clock).

    Prints one line per check, ✓ or ✗ with what to fix; exits 1 when any check failed.
    """
    from federation.nodes.doctor import render, run_doctor
    from federation.settings import load_node_settings

    findings = asyncio.run(run_doctor(load_node_settings(config), timeout=timeout))
    click.echo(render(findings))
    sys.exit(0 if all(f.ok for f in findings) else 1)


# ---------------------------------------------------------------------------- tools


@cli.command("search")
@click.option("--gateway", "address", default="127.0.0.1:50051", show_default=True)
@click.option("--cert", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--key", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--ca", "ca_path", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--name")
@click.option("--identifier")
@click.option("--birth-date", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--gender", type=click.Choice(["male", "female", "other", "unknown"]))
@click.option("--phone")
@click.option("--site", "sites", multiple=True, help="Only these sites (repeatable).")
@click.option("--purpose", default="TREAT", show_default=True)
@friendly
def search_cmd(address: str, cert: Path, key: Path, ca_path: Path, name: str | None,
               identifier: str | None, birth_date: dt.datetime | None, gender: str | None,
               phone: str | None, sites: tuple[str, ...], purpose: str) -> None:
    """Search patients at every site through the gateway; prints FHIR JSON lines."""
    from federation.client import GatewayClient
    from federation.nodes.model import PatientQuery
    from federation.security.tls import TlsMaterial

    query = PatientQuery(name=name, identifier=identifier, phone=phone, gender=gender,  # type: ignore[arg-type]
                         birth_date=birth_date.date() if birth_date else None)

    async def run() -> None:
        async with GatewayClient(address, TlsMaterial.load(cert, key, ca_path)) as client:
            answer = await client.search(query, site_ids=list(sites), purpose=purpose)
        for site_answer in answer.results:
            for patient in site_answer.patients:
                click.echo(patient.json.decode())
        for issue in answer.issues:
            click.secho(f"{issue.severity}: {issue.diagnostics}", fg="yellow", err=True)

    asyncio.run(run())


@cli.command("health")
@click.option("--config", type=click.Path(path_type=Path, exists=True), required=True,
              help="The gateway.toml or site.toml of the server on this machine.")
@click.option("--timeout", type=float, default=3.0, show_default=True)
@click.option("--grpc-only", is_flag=True, help="Gateway: skip /healthz (and its database check).")
@friendly
def health_cmd(config: Path, timeout: float, grpc_only: bool) -> None:
    """Exit 0 when the gateway or node configured in CONFIG is serving (container probes)."""
    from federation.health_probe import probe

    problems = probe(config, timeout=timeout, grpc_only=grpc_only)
    for problem in problems:
        click.echo(f"unhealthy: {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo("healthy")


@cli.group()
def synth() -> None:
    """The synthetic consortium (demo and test data)."""


@synth.command("generate")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--seed", type=int, default=20261121, show_default=True)
@click.option("--people", type=int, default=300, show_default=True)
@friendly
def synth_generate(out: Path, seed: int, people: int) -> None:
    """Generate six sites' source systems and the ground truth of who is who."""
    from federation.synth import generate_consortium

    manifest = generate_consortium(out, seed=seed, people=people)
    click.echo(json.dumps({"sites": [s.site_id for s in manifest.sites],
                           "truth": str(manifest.truth_path)}, ensure_ascii=False))


@cli.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path(".federation-demo"),
              show_default=True, help="CA, certificates, site data and logs live here.")
@click.option("--tour-only", is_flag=True, help="Run the tour, then stop everything.")
@click.option("--people", type=int, default=300, show_default=True)
@friendly
def demo(workdir: Path, tour_only: bool, people: int) -> None:
    """Bring up the demo consortium: gateway + six node agents on loopback, then a tour."""
    from federation.demo.runner import run_demo

    sys.exit(run_demo(workdir.resolve(), tour_only=tour_only, people=people))


def _register_groups() -> None:
    from federation.audit.cli import audit, keys
    from federation.consult.cli import consult
    from federation.identity.cli import identity
    from federation.referral.cli import referral
    from federation.security.token_cli import account, token
    from federation.terminology.cli import terminology

    cli.add_command(identity)
    cli.add_command(referral)
    cli.add_command(consult)
    cli.add_command(terminology)
    cli.add_command(token)
    cli.add_command(account)
    cli.add_command(audit)
    cli.add_command(keys)


_register_groups()


def main() -> None:
    cli(prog_name="federation")


if __name__ == "__main__":
    main()
