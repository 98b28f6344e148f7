"""The demo's audit step: every exchange of the tour is an AuditEvent in the gateway's
Merkle log, and anyone holding the consortium CA certificate can check it.

1. the latest signed tree head (city-1's site administrator may read it), its signature
   checked against the consortium CA;
2. a regional auditor (a consortium account the demo creates, signing in with a password)
   reads the newest AuditEvent and its inclusion proof, and checks that the event hashes
   to the leaf the proof places under the signed root;
3. the auditor's report: exchanges per site pair, reads by purpose, refusals, break-glass;
4. ``federation audit verify`` over the whole store: every leaf re-hashed and re-rendered
   from its exchange row, the tree rebuilt, every signed head checked.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import secrets
import urllib.error
from collections import Counter

from rich.console import Console

from federation.audit.events import canonical
from federation.audit.log import TreeHead
from federation.audit.merkle import leaf_hash, verify_inclusion
from federation.audit.tree_heads import verify_tree_head
from federation.audit.verify import verify_store
from federation.demo.signin import get_json, sign_in
from federation.demo.workspace import DemoLayout
from federation.errors import IntegrityError
from federation.security.accounts import hash_password
from federation.settings import load_gateway_settings
from federation.store import GatewayStore, make_engine

__all__ = ["run_audit_tour", "AUDITOR"]

AUDITOR = "auditor-zhao"
#: AuditEvent.outcome (FHIR R4)
_OUTCOMES = {"0": "success", "4": "minor failure", "8": "serious failure",
             "12": "major failure"}


async def run_audit_tour(layout: DemoLayout, console: Console) -> bool:
    """True when the signed head, the proof and the full verification all check out."""
    console.rule("[bold]Tour: the audit trail (安全审计)")
    ca_pem = layout.ca_cert.read_bytes()
    sth = await _signed_head(layout)
    if sth is None:
        console.print("[red]the gateway has signed no tree head[/]")
        return False
    try:
        verify_tree_head(sth, ca_pem)
    except IntegrityError as exc:
        console.print(f"[red]the tree head does not verify: {exc.message}[/]")
        return False
    signed = dt.datetime.fromtimestamp(sth.timestamp_ms / 1000, dt.UTC)
    console.print(f"Signed tree head: [bold]{sth.tree_size}[/] AuditEvents, root "
                  f"{sth.root_hash.hex()[:16]}…, signed {signed:%H:%M:%S} UTC by the gateway's "
                  "key — [green]signature checked against the consortium CA[/]")

    url = load_gateway_settings(layout.gateway_config).database_url
    engine = make_engine(url)
    try:
        token = await asyncio.to_thread(_auditor_token, layout, GatewayStore(engine))
        leaf = sth.tree_size - 1
        event = await asyncio.to_thread(_get, layout, f"/fhir/AuditEvent/{leaf}", token)
        proof = await asyncio.to_thread(
            _get, layout, f"/api/audit/proof/{leaf}?tree_size={sth.tree_size}", token)
        hashed = leaf_hash(canonical(event))
        try:
            if hashed.hex() != proof["leaf_hash"]:
                raise IntegrityError("the AuditEvent does not hash to its leaf")
            verify_inclusion(hashed, leaf, sth.tree_size,
                             [bytes.fromhex(h) for h in proof["audit_path"]], sth.root_hash)
        except IntegrityError as exc:
            console.print(f"[red]leaf {leaf}: {exc.message}[/]")
            return False
        who = event["agent"][0]["who"]["identifier"]["value"]
        what = event["subtype"][0]["code"]
        outcome = _OUTCOMES.get(event["outcome"], event["outcome"])
        console.print(f"{AUDITOR} reads leaf {leaf}: {what} by {who} → {outcome}; "
                      f"its inclusion proof ({len(proof['audit_path'])} "
                      "hashes) leads to the signed root — [green]it is in the log[/]")

        report = await asyncio.to_thread(_get, layout, "/api/audit/report", token)
        pairs: Counter[tuple[str, str]] = Counter()
        for v in report["volume"]:
            pairs[(v["from"] or "-", v["to"] or "-")] += v["exchanges"]
        console.print(f"Report for today: {report['exchanges']} exchanges; busiest site pairs "
                      + ", ".join(f"{a}→{b} {n}" for (a, b), n in pairs.most_common(3))
                      + f"; reads by purpose {json.dumps(report['reads_by_purpose'])}; "
                      f"{sum(r['count'] for r in report['refusals'])} refused, "
                      f"{len(report['break_glass'])} break-glass, "
                      f"{len(report['anomalies'])} flagged")

        checked = await asyncio.to_thread(verify_store, engine, ca_pem)
    finally:
        engine.dispose()
    if not checked.ok:
        first = checked.first
        console.print(f"[red]federation audit verify: {first.message if first else 'failed'}[/]")
        return False
    console.print(f"federation audit verify: {checked.leaves_checked} events re-hashed and "
                  f"matched to their exchange rows, {checked.tree_heads_checked} signed heads "
                  "— [green]nothing edited, deleted, reordered or forked[/]")
    return True


async def _signed_head(layout: DemoLayout) -> TreeHead | None:
    """The newest signed tree head (the gateway signs one every few seconds)."""
    for _ in range(60):
        try:
            body = await asyncio.to_thread(get_json, layout, "/api/audit/tree-head",
                                           site="city-1", role="site-admin")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            await asyncio.sleep(0.5)
            continue
        assert isinstance(body, dict)
        return TreeHead(int(body["tree_size"]), bytes.fromhex(body["root_hash"]),
                        int(body["timestamp_ms"]), base64.b64decode(body["signature"]),
                        body["signer_cert"])
    return None


def _auditor_token(layout: DemoLayout, store: GatewayStore) -> str:
    """A consortium auditor account (as ``federation account add`` makes), signed in."""
    password = secrets.token_urlsafe(18)
    store.put_account(AUDITOR, ["auditor"], hash_password(password), dt.datetime.now(dt.UTC))
    return str(sign_in(layout, {"grant_type": "password", "username": AUDITOR,
                                "password": password, "purpose_of_use": "HOPERAT"})
               ["access_token"])


def _get(layout: DemoLayout, path: str, token: str) -> dict:
    body = get_json(layout, path, timeout=30, headers={"Authorization": f"Bearer {token}"})
    assert isinstance(body, dict)
    return body
