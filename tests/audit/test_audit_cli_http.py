"""The audit trail on the HTTP API and the command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import httpx
import pytest
from audit_factories import exchange
from click.testing import CliRunner
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import text

from federation.audit.merkle import verify_inclusion
from federation.cli import cli
from federation.identity.store import IdentityStore
from federation.security.privacy import FieldCipher, KeyRing
from federation.store import GatewayStore, make_engine, upgrade
from tests.conftest import admin_token, bearer  # noqa: E402

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
async def http(gateway):
    """An auditor signed in (a consortium account) for compliance."""
    token = await asyncio.to_thread(admin_token, gateway, user="auditor.sun",
                                    roles=("auditor",), purpose="HCOMPL")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}",
                                 timeout=10, headers=bearer(token)) as client:
        yield client


async def test_report_tree_head_events_and_proofs_over_http(gateway, http) -> None:
    await asyncio.to_thread(gateway.store.log_exchanges, [
        exchange(i, at=NOW, requester_site="county-a", target_site="city-1",
                 operation="Gateway/ReadPatientRecord") for i in range(3)])
    body = (await http.get("/api/audit/report")).json()
    # the three reads, plus the auditor's own sign-in (an exchange too)
    assert body["exchanges"] == 4
    assert [(v["from"], v["to"], v["exchanges"]) for v in body["volume"]
            if v["to"] == "city-1"] == [("county-a", "city-1", 3)]
    assert (await http.get("/api/audit/tree-head")).status_code in (200, 404)
    sth = await asyncio.to_thread(gateway.tree_heads.sign_head)
    head = (await http.get("/api/audit/tree-head")).json()
    assert (head["tree_size"], head["root_hash"]) == (4, sth.root_hash.hex())
    event = await http.get("/fhir/AuditEvent/1")
    assert event.status_code == 200, event.text
    assert event.headers["content-type"].startswith("application/fhir+json")
    assert AuditEvent.model_validate(event.json()).id == "1"
    proof = (await http.get("/api/audit/proof/1", params={"tree_size": 4})).json()
    verify_inclusion(bytes.fromhex(proof["leaf_hash"]), 1, 4,
                     [bytes.fromhex(h) for h in proof["audit_path"]], sth.root_hash)
    for path, status in (("/api/audit/report?since=2025-02-30", 400),
                         ("/api/audit/report?since=2025-03-09&until=2025-03-01", 400),
                         ("/fhir/AuditEvent/99", 404), ("/api/audit/proof/99", 400)):
        reply = await http.get(path)
        assert reply.status_code == status
        assert reply.json()["resourceType"] == "OperationOutcome"


def _config(tmp_path: Path, pki, db: Path) -> Path:
    config = tmp_path / "gateway.toml"
    t = pki.tls("gateway")
    config.write_text(f'database_url = "sqlite:///{db}"\nprivacy_keyring = "keys.json"\n'
                      f'[tls]\ncert = "{t.cert}"\nkey = "{t.key}"\nca = "{t.ca}"\n')
    return config


def test_verify_and_report_on_the_command_line(tmp_path: Path, pki) -> None:
    db = tmp_path / "gateway.db"
    upgrade(f"sqlite:///{db}")
    engine = make_engine(f"sqlite:///{db}")
    store = GatewayStore(engine)
    store.upsert_site("city-1", "city", "city")
    store.log_exchanges([exchange(i, at=NOW, purpose="ETREAT", detail="卒中急救")
                         for i in range(5)])
    config = _config(tmp_path, pki, db)
    runner = CliRunner()
    assert runner.invoke(cli, ["audit", "sign", "--config", str(config)]).exit_code == 0
    ok = runner.invoke(cli, ["audit", "verify", "--config", str(config)])
    assert ok.exit_code == 0 and "ok: 5 entries and 1 signed tree heads" in ok.output
    report = runner.invoke(cli, ["audit", "report", "--config", str(config), "--json"])
    assert json.loads(report.output)["break_glass"][0]["reason"] == "卒中急救"
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_leaf WHERE idx = 3"))
    bad = runner.invoke(cli, ["audit", "verify", "--config", str(config)])
    assert bad.exit_code == 1
    assert "first bad entry: leaf 3 (deleted)" in bad.output
    engine.dispose()


def test_key_commands_encrypt_rotate_and_retire(tmp_path: Path, pki) -> None:
    db = tmp_path / "gateway.db"
    upgrade(f"sqlite:///{db}")
    engine = make_engine(f"sqlite:///{db}")
    GatewayStore(engine).upsert_site("city-1", "city", "city")
    IdentityStore(engine).link("city-1", "r1", {"name": "张伟", "phone": "13812345678",
                                                "birth_date": "1980-01-01", "sex": "male"})
    config = _config(tmp_path, pki, db)
    runner = CliRunner()
    init = runner.invoke(cli, ["keys", "init", "--config", str(config)])
    assert init.exit_code == 0, init.output
    first = KeyRing.load(tmp_path / "keys.json").active
    assert f"values per key: {{'{first}': 1}}" in init.output
    rotate = runner.invoke(cli, ["keys", "rotate", "--config", str(config), "--settle", "0",
                                 "--retire-old"])
    assert rotate.exit_code == 0, rotate.output
    ring = KeyRing.load(tmp_path / "keys.json")
    assert ring.active != first and set(ring.keys) == {ring.active}
    assert f"retired key {first}" in rotate.output
    status = runner.invoke(cli, ["keys", "status", "--config", str(config)])
    assert f"{ring.active} (active): 1 values" in status.output
    empi = IdentityStore(engine, cipher=FieldCipher(tmp_path / "keys.json"))
    assert {h["record_id"] for h in empi.search({"phone": "13812345678"})} == {"r1"}
    engine.dispose()
