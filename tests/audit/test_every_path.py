"""Every cross-site path produces exactly one AuditEvent: found statically (nothing but the
store writes exchange rows, and it always appends) and at run time (a tour of every
path — fan-out search, quality, change feed, archive read, PIX/PDQ over gRPC and HTTP,
refusals — leaves as many valid leaves as exchange rows, and the log verifies)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import httpx
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import func, select

import federation
from federation.audit.verify import verify_store
from federation.client import GatewayClient
from federation.errors import PermissionDenied
from federation.nodes.model import PatientQuery
from federation.store.models import ExchangeLog
from tests.conftest import bearer, staff_token

SRC = Path(federation.__file__).parent
WRITER = SRC / "store" / "gateway_store.py"


def test_only_the_store_writes_exchange_rows_and_it_always_appends_the_audit() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if "_proto" in path.parts or path == WRITER or path.name == "models.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "ExchangeLog" or (
                    isinstance(node, ast.Constant) and node.value == "exchange_log"
                    and "migrations" not in path.parts):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    allowed = {"audit/verify.py", "audit/log.py", "audit/search.py"}   # readers, not writers
    assert {o.split(":")[0] for o in offenders} <= allowed, offenders
    source = WRITER.read_text(encoding="utf-8")
    body = source[source.index("def log_exchanges"):source.index("def list_exchanges")]
    assert "_insert_exchanges(conn, rows)" in body and "append_exchanges(conn," in body
    # the insert statements are used nowhere else in the store: both live in _insert_exchanges
    assert source.count("_INSERT_EXCHANGES") == 2       # defined, its RETURNING form
    assert source.count("_RETURNING_IDS") == 2          # defined, used on PostgreSQL
    assert source.count("INSERT INTO exchange_log") == 1    # SQLite's executemany
    assert source.count("_insert_exchanges(") == 2      # defined, called by log_exchanges


async def test_a_tour_of_every_path_leaves_one_valid_audit_event_per_exchange(
        gateway, start_nodes, pki) -> None:
    (node,) = await start_nodes(gateway, "county-b")

    async def synced() -> bool:
        cursor = await asyncio.to_thread(gateway.archive.cursor, "county-b")
        return cursor is not None and cursor.after == await asyncio.to_thread(node.feed.head) > 0

    while not await synced():
        await asyncio.sleep(0.05)
    patient = next(c for c in await asyncio.to_thread(node.feed.changes, 0, limit=50)
                   if c.resource_type == "Patient")
    address = f"127.0.0.1:{gateway.grpc_port}"
    async with GatewayClient(address, pki.material("tester")) as client:
        await client.search(PatientQuery(gender="female"))
        await client.read_patient_record("county-b", patient.resource_id)
    async with GatewayClient(address, pki.material("county-a")) as as_node:
        try:
            await as_node.read_patient_record("county-b", patient.resource_id)
        except PermissionDenied:
            pass
    admin = await asyncio.to_thread(staff_token, gateway, pki, site="county-b",
                                    roles=("site-admin",), purpose="HOPERAT")
    doctor = await asyncio.to_thread(staff_token, gateway, pki)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        await http.get("/api/quality", params={"refresh": "true"}, headers=bearer(admin))
        await http.get("/fhir/Patient", params={"telecom": "13800000000"},
                       headers=bearer(doctor))
        await http.get("/fhir/Patient", params={"telecom": "13800000000"})  # refused: logged
    engine = gateway.store.engine
    with engine.connect() as conn:
        rows = conn.execute(select(ExchangeLog.operation, func.count())
                            .group_by(ExchangeLog.operation)).all()
        total = conn.execute(select(func.count()).select_from(ExchangeLog)).scalar_one()
    operations = {op for op, _ in rows}
    assert {"NodeAgent/StreamChanges", "NodeAgent/SearchPatients", "Gateway/ReadPatientRecord",
            "NodeAgent/GetQualityReport", "FHIR/Patient?search", "POST /auth/token",
            "GET /fhir/Patient"} <= operations
    head = await asyncio.to_thread(gateway.audit.head)
    assert head.tree_size == total
    for leaf in await asyncio.to_thread(gateway.audit.leaves, 0, total):
        AuditEvent.model_validate_json(leaf.leaf)
    report = await asyncio.to_thread(verify_store, engine, pki.ca.ca_pem)
    assert report.ok, report.findings
