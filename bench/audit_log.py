"""Audit trail figures: append throughput, verify time, proof time, overhead on an exchange.

    python bench/audit_log.py                        # SQLite, 1,000,000 events for verify
    python bench/audit_log.py --events 200000 --backend postgresql

1. **append** — exchange-log rows written through ``GatewayStore.log_exchanges`` (each
   with its AuditEvent rendered, hashed and appended to the Merkle log in the same
   transaction): one exchange per transaction (the ``log_exchange`` of a single call),
   and batches of 100 (a fan-out to many sites) and 5,000 (bulk loading the big log);
2. **verify** — ``verify_store`` (``federation audit verify``) over ``--events`` leaves:
   every leaf re-hashed, re-rendered from its exchange row and compared, the tree
   rebuilt, tiles and signed tree heads checked;
3. **inclusion proof** — ``AuditLog.inclusion_proof`` for random leaves of that log, and
   a consistency proof between two random sizes;
4. **overhead on an exchange path** — ``Gateway.ResolvePatient`` over gRPC with mutual TLS
   against a running gateway, calls back to back, with the audit append switched on and
   off in alternating rounds within one run. (The referral workflow is another branch's;
   its overhead figure is to be measured there with the same switch.)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federation.audit.log import AuditLog  # noqa: E402
from federation.audit.tree_heads import TreeHeadSigner  # noqa: E402
from federation.audit.verify import verify_store  # noqa: E402
from federation.security.ca import init_ca  # noqa: E402
from federation.security.signing import Signer  # noqa: E402
from federation.store import (  # noqa: E402
    ExchangeEntry,
    GatewayStore,
    gateway_store,  # noqa: E402
    make_engine,
    upgrade,
)

T0 = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


def entry(i: int) -> ExchangeEntry:
    return ExchangeEntry(
        at=T0 + dt.timedelta(milliseconds=i), correlation_id=f"{i:032x}",
        requester_kind="node", requester_id="county-a", requester_site="county-a",
        target_site="city-1", operation="Gateway/ReadPatientRecord", purpose="TREAT",
        patient_ref=f"{i * 2654435761 % 2**128:032x}", outcome="ok", status_code="OK",
        records=7, duration_ms=3.2)


def append_rate(store: GatewayStore, start: int, count: int, batch: int) -> float:
    began = time.perf_counter()
    for offset in range(0, count, batch):
        store.log_exchanges([entry(start + offset + j) for j in range(min(batch, count - offset))])
    return count / (time.perf_counter() - began)


def bench_log(url: str, events: int, ca_dir: Path) -> None:
    upgrade(url)
    engine = make_engine(url)
    store = GatewayStore(engine)
    store.upsert_site("city-1", "city", "city")
    store.upsert_site("county-a", "county", "county")
    n = 0
    for batch, count in ((1, 3000), (100, 30000), (5000, 50000)):
        rate = append_rate(store, n, count, batch)
        n += count
        print(f"append, {batch:>5} per transaction: {rate:>9,.0f} events/s")
    ca = init_ca(ca_dir / "ca")
    issued = ca.issue_gateway(ca_dir / "gateway")
    signer = TreeHeadSigner(AuditLog(engine),
                            Signer(issued.cert_path.read_bytes(), issued.key_path.read_bytes()))
    while n < events:
        step = min(100_000, events - n)
        rate = append_rate(store, n, step, 5000)
        n += step
        signer.sign_head()
        print(f"  … {n:,} events ({rate:,.0f}/s while loading)", flush=True)
    signer.sign_head()
    log = AuditLog(engine)
    began = time.perf_counter()
    workers = os.cpu_count() or 1
    report = verify_store(engine, ca.ca_pem, workers=workers)
    took = time.perf_counter() - began
    print(f"verify {report.leaves_checked:,} events, {report.tree_heads_checked} tree heads, "
          f"{workers} processes: "
          f"{took:.1f} s ({'ok' if report.ok else report.first})")
    rng = random.Random(1)
    size = log.head().tree_size
    times = []
    for _ in range(200):
        i = rng.randrange(size)
        began = time.perf_counter()
        log.inclusion_proof(i, size)
        times.append((time.perf_counter() - began) * 1000)
    print(f"inclusion proof in a tree of {size:,}: p50 {statistics.median(times):.2f} ms, "
          f"max {max(times):.2f} ms")
    began = time.perf_counter()
    log.consistency_proof(rng.randrange(size // 2), size)
    print(f"consistency proof: {(time.perf_counter() - began) * 1000:.2f} ms")
    engine.dispose()


async def bench_overhead(workdir: Path, calls: int, rounds: int) -> None:
    """ResolvePatient round trips with and without the audit append, alternating."""
    from federation._proto.v1 import gateway_pb2, gateway_pb2_grpc
    from federation.fhir_systems import local_patient_id_system
    from federation.gateway.app import start_gateway
    from federation.rpc.channels import secure_channel
    from federation.security.ca import GATEWAY_SERVER_NAME
    from federation.security.tls import TlsMaterial
    from federation.settings import GatewaySettings, SiteEntry, TlsSettings

    ca = init_ca(workdir / "ca")
    gw = ca.issue_gateway(workdir / "gw")
    node = ca.issue_node("county-b", "county", workdir / "county-b")
    settings = GatewaySettings(
        grpc_rate_per_node=1e6, http_rate_per_user=1e6,  # measure the server, not the limits
        database_url=f"sqlite:///{workdir / 'gateway.db'}", grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0", tls=TlsSettings(gw.cert_path, gw.key_path, gw.ca_path),
        sites=(SiteEntry("county-a", "A", "county"), SiteEntry("county-b", "B", "county")),
        privacy_keyring=workdir / "keys.json")
    running = await start_gateway(settings)
    try:
        await asyncio.to_thread(running.identity.link, "county-a", "pa", {
            "name": "张伟", "sex": "male", "birth_date": "1980-05-12", "phone": "13800138000"},
            local_id="A0001")
        material = TlsMaterial.load(node.cert_path, node.key_path, node.ca_path)
        real = gateway_store.append_exchanges
        figures: dict[str, list[float]] = {"with audit": [], "without audit": []}
        async with secure_channel(f"127.0.0.1:{running.grpc_port}", material, 4 << 20,
                                  server_name=GATEWAY_SERVER_NAME) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            query = gateway_pb2.PixQuery(system=local_patient_id_system("county-a"),
                                         value="A0001")
            for _ in range(20):
                await stub.ResolvePatient(query)
            for r in range(rounds * 2):
                audit_on = r % 2 == 0
                gateway_store.append_exchanges = real if audit_on else (lambda s, rows: [])
                began = time.perf_counter()
                for _ in range(calls):
                    await stub.ResolvePatient(query)
                figures["with audit" if audit_on else "without audit"].append(
                    calls / (time.perf_counter() - began))
        gateway_store.append_exchanges = real
        on, off = (statistics.median(figures[k]) for k in ("with audit", "without audit"))
        print(f"Gateway.ResolvePatient, {calls} calls × {rounds} rounds each: "
              f"{on:,.0f} calls/s with audit, {off:,.0f} without → overhead "
              f"{(off / on - 1) * 100:.1f} %")
    finally:
        await running.stop(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-log", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_log:
            if args.backend == "sqlite":
                bench_log(f"sqlite:///{work / 'audit.db'}", args.events, work)
            else:
                from tests.pg_util import throwaway_database

                with throwaway_database() as url:
                    bench_log(url, args.events, work)
        if not args.skip_overhead:
            asyncio.run(bench_overhead(work / "overhead", args.calls, args.rounds))


if __name__ == "__main__":
    main()
