#!/usr/bin/env python3
"""Archive reads through 1, 2 and 3 gateway replicas on one PostgreSQL.

A throwaway PostgreSQL database gets the archive of one site (``--patients`` people,
each with a Patient and ``--per-patient`` further resources, linked by the EMPI as the
feed puller would). Then, for k = 1, 2, 3, k gateway processes are started on it, and
one load process drives ``Gateway.ReadPatientRecord`` (operator certificate, mutual TLS,
every read logged in the exchange log) from ``--clients`` concurrent clients, spread
round-robin over the replicas, for ``--seconds``; and it times ``GET /metrics`` (the
store-computed gauges) on the first replica meanwhile.

    python bench/replicas.py                          # 1,000 patients, 32 clients, 10 s
    FEDERATION_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/replicas.py --seconds 15

On a 2-core machine the replicas, PostgreSQL and the load share the same two cores, so
the curve shows contention, not what separate machines would give.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import random
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from _shared import (  # sets the path first
    gateway_process,
    machine,
    percentile,
    throwaway_database,
)

SITE = "county-a"


def _pki(root: Path) -> None:
    from federation.security.ca import init_ca

    ca = init_ca(root / "ca")
    ca.issue_gateway(root / "gateway")
    ca.issue_operator("bench", root / "bench")


def _populate(url: str, patients: int, per_patient: int) -> int:
    from federation.archive.store import ArchiveStore, StoredChange
    from federation.identity.store import IdentityStore
    from federation.store import GatewayStore, make_engine, upgrade

    upgrade(url)
    engine = make_engine(url)
    store = GatewayStore(engine)
    store.upsert_site(SITE, "东阳县人民医院", "county")
    archive = ArchiveStore(engine, IdentityStore(engine).index)
    rng = random.Random(7)
    seq = 0
    for start in range(0, patients, 100):
        batch = []
        for i in range(start, min(patients, start + 100)):
            pid = f"p{i:06d}"
            seq += 1
            batch.append(StoredChange("Patient", pid, seq, False, pid, json.dumps({
                "resourceType": "Patient", "id": pid, "gender": rng.choice(["male", "female"]),
                "birthDate": f"19{rng.randint(30, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                "name": [{"text": f"患者{i}"}]}, ensure_ascii=False).encode()))
            for j in range(per_patient):
                seq += 1
                oid = f"{pid}-o{j}"
                batch.append(StoredChange("Observation", oid, seq, False, pid, json.dumps({
                    "resourceType": "Observation", "id": oid, "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "valueQuantity": {"value": rng.randint(90, 160), "unit": "g/L"}}).encode()))
        archive.apply(SITE, "e1", batch, after=seq, node_head=seq, rejected=0,
                      now=dt.datetime.now(dt.UTC), caught_up=True)
    engine.dispose()
    return seq


async def _drive(ports: list[tuple[int, int]], root: Path, patients: int, clients: int,
                 seconds: float, warmup: float) -> dict:
    import grpc

    from federation._proto.v1 import gateway_pb2, gateway_pb2_grpc
    from federation.rpc.channels import secure_channel
    from federation.security.ca import GATEWAY_SERVER_NAME
    from federation.security.tls import TlsMaterial

    tls = TlsMaterial.load(root / "bench/bench.crt", root / "bench/bench.key", root / "ca/ca.crt")
    channels = [secure_channel(f"127.0.0.1:{ports[i % len(ports)][0]}", tls, 16 << 20,
                               server_name=GATEWAY_SERVER_NAME) for i in range(clients)]
    latencies: list[float] = []
    resources = errors = 0
    measuring = False
    stop_at = time.monotonic() + warmup + seconds
    rng = random.Random(1)

    async def client(channel) -> None:
        nonlocal errors, resources
        stub = gateway_pb2_grpc.GatewayStub(channel)
        while time.monotonic() < stop_at:
            pid = f"p{rng.randrange(patients):06d}"
            t0 = time.perf_counter()
            try:
                got = [r async for r in stub.ReadPatientRecord(gateway_pb2.ReadPatientRecordRequest(
                    site_id=SITE, patient_id=pid, purpose_of_use="TREAT"), timeout=20)]
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            if measuring:
                latencies.append(time.perf_counter() - t0)
                resources += len(got)

    scrapes: list[float] = []

    async def scrape() -> None:
        url = f"http://127.0.0.1:{ports[0][1]}/metrics"
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
            if measuring:
                scrapes.append(time.perf_counter() - t0)
            await asyncio.sleep(1)

    async def flip() -> None:
        nonlocal measuring
        await asyncio.sleep(warmup)
        measuring = True

    started = time.monotonic()
    await asyncio.gather(flip(), scrape(), *(client(c) for c in channels))
    elapsed = time.monotonic() - started - warmup
    for c in channels:
        await c.close()
    return {"rps": len(latencies) / elapsed, "res_s": resources / elapsed,
            "p50": percentile(latencies, 0.5) * 1000, "p99": percentile(latencies, 0.99) * 1000,
            "errors": errors,
            "metrics_ms": statistics.median(scrapes) * 1000 if scrapes else float("nan")}


def run(replicas: list[int], *, patients: int = 1000, per_patient: int = 15,
        clients: int = 32, seconds: float = 10.0, warmup: float = 3.0) -> dict[int, dict]:
    """The archive read curve: replica count → reads/s, resources/s, p50/p99 ms, errors,
    /metrics ms; on one throwaway PostgreSQL database loaded once for every count."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, throwaway_database(prefix="fed_bench") as url:
        root = Path(tmp)
        _pki(root)
        t0 = time.perf_counter()
        rows = _populate(url, patients, per_patient)
        print(f"archive: {rows} resources of {patients} patients loaded in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        results = {}
        for k in replicas:
            ready: mp.Queue = ctx.Queue()
            procs = [ctx.Process(target=gateway_process, args=(url, tmp, ready), daemon=True)
                     for _ in range(k)]
            for p in procs:
                p.start()
            try:
                ports = [ready.get(timeout=120) for _ in procs]
                results[k] = asyncio.run(_drive(ports, root, patients, clients, seconds, warmup))
                results[k]["machine"] = machine()
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.join(10)
    return results


def print_table(results: dict[int, dict], *, per_patient: int = 15, clients: int = 32,
                seconds: float = 10.0, warmup: float = 3.0) -> None:
    print(f"Gateway.ReadPatientRecord ({1 + per_patient} resources a patient), "
          f"{clients} clients round-robin, {seconds:.0f} s after {warmup:.0f} s "
          f"warm-up, one PostgreSQL, {mp.cpu_count()} cores")
    print(f"{'replicas':>8} {'reads/s':>8} {'res/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7} {'/metrics ms':>12}  machine at the end")
    for k, r in results.items():
        print(f"{k:>8} {r['rps']:>8.0f} {r['res_s']:>8.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} "
              f"{r['errors']:>7} {r['metrics_ms']:>12.1f}  {r['machine']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--per-patient", type=int, default=15)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--replicas", default="1,2,3")
    args = parser.parse_args()
    shape = {"per_patient": args.per_patient, "clients": args.clients,
             "seconds": args.seconds, "warmup": args.warmup}
    results = run([int(k) for k in args.replicas.split(",")], patients=args.patients, **shape)
    print_table(results, **shape)


if __name__ == "__main__":
    main()
