"""``federation audit …`` and ``federation keys …``: verify the trail, report, sign, rotate.

``audit verify --config gateway.toml`` recomputes the log from the store (administrator);
``audit verify --node site.toml`` checks the node's receipts against the gateway's
current log over mTLS (any node). Both exit 1 and print the first bad entry when
something does not check out.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import click

from federation._cli_util import friendly
from federation.errors import ConfigError

__all__ = ["audit", "keys"]

CONFIG = click.option("--config", type=click.Path(path_type=Path, exists=True),
                      help="gateway.toml")


def _settings(config: Path | None) -> Any:
    from federation.settings import load_gateway_settings

    return load_gateway_settings(config)


def _engine(settings: Any) -> Any:
    from federation.store import make_engine, upgrade

    engine = make_engine(settings.database_url)
    upgrade(engine)
    return engine


@click.group()
def audit() -> None:
    """The tamper-evident audit trail: verify it, report on it, sign its head."""


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.as_json(), ensure_ascii=False, indent=1))
    elif report.ok:
        click.echo(report.summary())
    else:
        click.secho(report.summary(), fg="red")
        for f in report.findings[:20]:
            click.echo(f"  leaf {f.leaf}: {f.kind}: {f.message}")
    if not report.ok:
        raise SystemExit(1)


@audit.command("verify")
@CONFIG
@click.option("--node", "node_config", type=click.Path(path_type=Path, exists=True),
              help="site.toml: verify this node's receipts against the gateway instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--workers", type=int, default=os.cpu_count() or 1, show_default=True,
              help="Processes checking leaves in parallel (the store's verification).")
@friendly
def verify(config: Path | None, node_config: Path | None, as_json: bool, workers: int) -> None:
    """Recompute the audit log (or check a node's receipts) and name the first bad entry."""
    if node_config is not None:
        _print_report(asyncio.run(_verify_node(node_config)), as_json)
        return
    from federation.audit.verify import verify_store

    settings = _settings(config)
    started = time.perf_counter()
    report = verify_store(_engine(settings), settings.tls.ca.read_bytes(), workers=workers)
    if not as_json:
        click.echo(f"checked in {time.perf_counter() - started:.1f} s")
    _print_report(report, as_json)


async def _verify_node(node_config: Path) -> Any:
    from federation._proto.v1 import audit_pb2_grpc
    from federation.audit.receipts import verify_receipts
    from federation.nodes.receipts import NodeReceipts
    from federation.rpc.channels import secure_channel
    from federation.security.ca import GATEWAY_SERVER_NAME
    from federation.security.tls import TlsMaterial
    from federation.settings import load_node_settings

    settings = load_node_settings(node_config)
    path = settings.state_dir / "receipts.sqlite"
    if not path.exists():
        raise ConfigError(f"{path} does not exist: this node has kept no receipts yet")
    tls = TlsMaterial.load(settings.tls.cert, settings.tls.key, settings.tls.ca)
    store = NodeReceipts(path)
    try:
        async with secure_channel(settings.gateway, tls, settings.max_message_bytes,
                                  server_name=GATEWAY_SERVER_NAME) as channel:
            return await verify_receipts(audit_pb2_grpc.AuditStub(channel), store, tls.ca_pem,
                                         settings.site_id)
    finally:
        store.close()


@audit.command("report")
@CONFIG
@click.option("--since", help="First day (YYYY-MM-DD, local time); default a week ago.")
@click.option("--until", help="Day after the last (exclusive); default tomorrow.")
@click.option("--json", "as_json", is_flag=True)
@friendly
def report(config: Path | None, since: str | None, until: str | None, as_json: bool) -> None:
    """Exchange volume, reads by purpose, refusals, break-glass uses and anomalies."""
    from federation.audit.http import report_window
    from federation.audit.log import AuditLog
    from federation.audit.reports import build_report

    start, end = report_window(since, until)
    rows = AuditLog(_engine(_settings(config))).exchanges(start, end)
    body = build_report(rows, since=start, until=end)
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False, indent=1))
        return
    click.echo(f"{body['exchanges']} exchanges from {start:%Y-%m-%d} to {end:%Y-%m-%d} (excl.)")
    click.echo("\nvolume (day, from → to: exchanges / records)")
    for v in body["volume"]:  # type: ignore[attr-defined]
        click.echo(f"  {v['day']}  {v['from']} → {v['to']}: {v['exchanges']} / {v['records']}")
    click.echo(f"\nreads by purpose: {body['reads_by_purpose']}")
    click.echo("\nrefusals")
    for r in body["refusals"]:  # type: ignore[attr-defined]
        click.echo(f"  {r['count']:>5} × {r['requester']} {r['operation']} ({r['status']})")
    click.echo("\nbreak-glass (ETREAT)")
    for g in body["break_glass"]:  # type: ignore[attr-defined]
        click.echo(f"  {g['at']} {g['requester']} → {g['target_site']}: {g['reason']}")
    click.echo("\nanomalies")
    for a in body["anomalies"]:  # type: ignore[attr-defined]
        click.echo(f"  [{a['rule']}] {a.get('requester') or a.get('requester_site')} "
                   f"{a.get('day') or a.get('night')}: {a['why']}")


@audit.command("sign")
@CONFIG
@friendly
def sign(config: Path | None) -> None:
    """Sign the log's current head now (gateways also do it on their own schedule)."""
    from federation.audit.log import AuditLog
    from federation.audit.tree_heads import TreeHeadSigner
    from federation.security.signing import Signer
    from federation.security.tls import TlsMaterial

    settings = _settings(config)
    tls = TlsMaterial.load(settings.tls.cert, settings.tls.key, settings.tls.ca)
    sth = TreeHeadSigner(AuditLog(_engine(settings)), Signer.from_tls(tls)).sign_head()
    click.echo(f"tree head: size {sth.tree_size}, root {sth.root_hash.hex()}")


# ---------------------------------------------------------------------------- keys


@click.group()
def keys() -> None:
    """The privacy key ring: resident IDs and phones encrypted at rest (AES-GCM)."""


def _keyring(settings: Any) -> Path:
    if settings.privacy_keyring is None:
        raise ConfigError("no privacy_keyring is configured (FEDERATION_PRIVACY_KEYRING)")
    return Path(settings.privacy_keyring)


@keys.command("init")
@CONFIG
@friendly
def keys_init(config: Path | None) -> None:
    """Create the key ring if it does not exist, and encrypt what is still clear."""
    from federation.security.privacy import FieldCipher, create_keyring
    from federation.store.rekey import reencrypt

    settings = _settings(config)
    path = _keyring(settings)
    ring = create_keyring(path)
    done = reencrypt(_engine(settings), FieldCipher(path))
    click.echo(f"{path}: active key {ring.active}; {done.records} records and {done.patients} "
               f"Patient bodies sealed; values per key: {done.remaining}")


@keys.command("rotate")
@CONFIG
@click.option("--retire-old", is_flag=True,
              help="Remove old keys from the ring once no stored value uses them.")
@click.option("--settle", type=float, default=6.0, show_default=True,
              help="Seconds to wait after the new key is written, so that every running "
                   "gateway has re-read the ring before the final pass.")
@friendly
def keys_rotate(config: Path | None, retire_old: bool, settle: float) -> None:
    """Add a new active key and re-encrypt the store with it, gateways running."""
    from federation.security.privacy import FieldCipher, retire_key, rotate_keyring
    from federation.store.rekey import reencrypt

    settings = _settings(config)
    path = _keyring(settings)
    ring = rotate_keyring(path)
    click.echo(f"new active key {ring.active}; waiting {settle:g} s for gateways to pick it up")
    time.sleep(settle)
    engine = _engine(settings)
    done = reencrypt(engine, FieldCipher(path))
    click.echo(f"re-encrypted {done.records} records and {done.patients} Patient bodies in "
               f"{done.passes} pass(es); values per key: {done.remaining}")
    if retire_old:
        for kid in sorted(set(ring.keys) - {ring.active}):
            if done.remaining.get(kid):
                click.echo(f"key {kid} still seals {done.remaining[kid]} values: kept")
            else:
                retire_key(path, kid)
                click.echo(f"retired key {kid}")


@keys.command("status")
@CONFIG
@friendly
def keys_status(config: Path | None) -> None:
    """Which key seals how many stored values (``clear``: not encrypted)."""
    from federation.security.privacy import KeyRing
    from federation.store.rekey import key_usage

    settings = _settings(config)
    ring = KeyRing.load(_keyring(settings))
    usage = key_usage(_engine(settings))
    for kid in sorted(set(ring.keys) | set(usage)):
        mark = " (active)" if kid == ring.active else ""
        click.echo(f"{kid}{mark}: {usage.get(kid, 0)} values")
