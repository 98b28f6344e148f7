#!/usr/bin/env python3
"""``Patient/$everything`` through the gateway vs. straight from the nodes, and sync lag.

Three OS processes on loopback, real mutual TLS, a throwaway PKI:

* ``--role nodes``: four node agents (city-1, county-a, county-b, township-a1), vendor-A
  HIS databases from :func:`federation.synth.heavy.heavy_records` — ``--persons`` people,
  each with about ``--per-site`` resources at every site (≈ 4 × 500 = 2,000 in all);
* ``--role gateway``: one gateway (SQLite store), started twice: every site in
  ``replicate`` mode, then (fresh store) every site in ``federate`` mode;
* the parent drives HTTP with ``--readers`` concurrent readers (bearer token of a doctor
  at city-1), each request ``GET /fhir/Patient/<person>/$everything`` — its first page
  (``_count=100``, ``total`` counting all) and, for replicate, the whole record in one
  Bundle (``_count=5000``; ≈ 2.3 MB of JSON) — and reads the same resources straight from the nodes
  with ``NodeAgent.FetchPatientResources`` (the gateway's certificate), from one node
  and from all four in parallel, with the same concurrency.

Sync lag (replicate phase): the parent adds a lab result to city-1's HIS database and
polls the gateway's store until the resource is there; the node rescans every
``--scan-ms`` (its change-feed scan interval), then notifies the gateway, which pulls.

    python bench/archive_everything.py                      # 4 persons × 4 sites × 500
    python bench/archive_everything.py --requests 200 --lag-samples 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SITES = ("city-1", "county-a", "county-b", "township-a1")
READER_SITE = "city-1"


def _emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def _tls(pki: Path, name: str):
    from federation.settings import TlsSettings

    return TlsSettings(cert=pki / name / f"{name}.crt", key=pki / name / f"{name}.key",
                       ca=pki / "ca" / "ca.crt", crl=pki / "ca" / "crl.pem")


def _wait_stdin() -> asyncio.Event:
    loop, done = asyncio.get_running_loop(), asyncio.Event()

    def read() -> None:
        sys.stdin.readline()
        loop.call_soon_threadsafe(done.set)
    threading.Thread(target=read, daemon=True).start()
    return done


# ------------------------------------------------------------------------- children


async def _nodes(args: argparse.Namespace) -> None:
    from federation._runtime import settle_heap
    from federation.nodes.agent import start_node
    from federation.settings import NodeSettings
    from federation.synth import load_manifest

    manifest = load_manifest(args.data)
    running = []
    for site in SITES:
        spec = manifest.site(site)
        running.append(await start_node(NodeSettings(
            site_id=site, listen="127.0.0.1:0", gateway=f"127.0.0.1:{args.grpc_port}",
            tls=_tls(args.pki, site), source=spec.source_settings(),
            state_dir=args.work / "nodes" / site, backoff_initial_ms=50, backoff_max_ms=300,
            feed_scan_interval_ms=args.scan_ms)))
    settle_heap()                                     # as `federation node serve` does
    _emit(event="nodes", ports={n.settings.site_id: n.port for n in running},
          heads={n.settings.site_id: n.feed.head() for n in running})
    await _wait_stdin().wait()
    for node in running:
        await node.stop(0.5)


class _StandingReferrals:
    """In federate mode the gateway holds no Encounters, so care relationships come from
    the referral/consult workflows; until they are merged, the bench registers this
    source: the reader's site has an open referral for every person."""

    def __init__(self, ctx: Any) -> None:
        pass

    def sites_caring_for(self, person_id: str) -> set[str]:
        return {READER_SITE}


async def _gateway(args: argparse.Namespace) -> None:
    from federation._runtime import settle_heap
    from federation.archive.care import register_care_source
    from federation.gateway.app import start_gateway

    if args.mode == "federate":
        register_care_source(_StandingReferrals)
    from federation.settings import GatewaySettings, SiteEntry
    from federation.synth import load_manifest

    manifest = load_manifest(args.data)
    settings = GatewaySettings(
        grpc_rate_per_node=1e6, http_rate_per_user=1e6,  # measure the server, not the limits
        database_url=f"sqlite:///{args.work / f'gateway-{args.mode}.db'}",
        grpc_listen=f"127.0.0.1:{args.grpc_port}", http_listen=f"127.0.0.1:{args.http_port}",
        tls=_tls(args.pki, "gateway"),
        sites=tuple(SiteEntry(s.site_id, s.name, s.tier, s.parent_site_id, args.mode)
                    for s in manifest.sites),
        sync_interval_ms=3_600_000, sync_validate=False, archive_deadline_ms=5000,
        archive_index_cache_rows=args.index_cache_rows,
        archive_care_window_days=20_000, heartbeat_interval_ms=1000,
        unreachable_after_ms=10_000, log_level="WARNING")
    running = await start_gateway(settings)
    settle_heap()                                     # as `federation gateway serve` does
    _emit(event="gateway", http=running.http_port)
    await _wait_stdin().wait()
    await running.stop(0.5)


# ------------------------------------------------------------------------- parent


class Child:
    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=os.environ)

    def event(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"child {self.proc.args} ended early")
        return json.loads(line)

    def stop(self) -> None:
        try:
            self.proc.stdin.write("stop\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        self.proc.wait(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def _load(call, targets: list[Any], readers: int, requests: int) -> list[float]:
    """``requests`` calls spread over ``readers`` concurrent tasks; latencies in ms."""
    latencies: list[float] = []
    queue = list(range(requests))

    async def reader(seed: int) -> None:
        rng = random.Random(seed)
        while queue:
            queue.pop()
            t0 = time.perf_counter()
            await call(rng.choice(targets))
            latencies.append((time.perf_counter() - t0) * 1000)
    await asyncio.gather(*(reader(i) for i in range(readers)))
    return latencies


def _persons(db: Path) -> dict[str, dict[str, str]]:
    with sqlite3.connect(db) as conn:
        out: dict[str, dict[str, str]] = {}
        for site, record, person in conn.execute(
                "SELECT site_id, record_id, person_id FROM identity_record "
                "WHERE state = 'linked'"):
            out.setdefault(person, {})[site] = record
    return {p: r for p, r in out.items() if len(r) == len(SITES)}


def _synced(db: Path) -> bool:
    """Every site's feed read to its head, and resources stored for it (read from the
    gateway's database: the sync status on the HTTP API is for administrators)."""
    try:
        with sqlite3.connect(db) as conn:
            cursors = conn.execute("SELECT site_id FROM feed_cursor WHERE node_head > 0 AND "
                                   "after = node_head").fetchall()
            stored = conn.execute("SELECT DISTINCT site_id FROM site_resource").fetchall()
    except sqlite3.Error:       # not created or not migrated yet
        return False
    return len(cursors) == len(SITES) and len(stored) == len(SITES)


async def _wait_synced(db: Path) -> None:
    for _ in range(1200):
        if await asyncio.to_thread(_synced, db):
            await asyncio.sleep(1.0)            # let the EMPI's last links commit
            return
        await asyncio.sleep(0.25)
    raise SystemExit("the gateway did not catch up with the nodes")


async def _token(http, pki: Path) -> str:
    from federation.security.tokens import JWT_BEARER_GRANT, sign_staff_assertion

    tls = _tls(pki, READER_SITE)
    assertion = sign_staff_assertion(tls.key.read_bytes(), tls.cert.read_bytes(),
                                     user_id="bench.doctor", roles=["doctor"],
                                     scopes=["user/*.read"], purpose="TREAT")
    reply = await http.post("/auth/token", data={"grant_type": JWT_BEARER_GRANT,
                                                 "assertion": assertion})
    reply.raise_for_status()
    return reply.json()["access_token"]


async def _measure_gateway(args, http_port: int, mode: str, count: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=args.readers)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=60,
                                 limits=limits) as http:
        await _wait_synced(args.work / f"gateway-{mode}.db")
        persons = _persons(args.work / f"gateway-{mode}.db")
        headers = {"Authorization": f"Bearer {await _token(http, args.pki)}"}
        sizes: list[int] = []
        partial: list[str] = []

        async def everything(person: str) -> None:
            reply = await http.get(f"/fhir/Patient/{person}/$everything",
                                   params={"_count": str(count)}, headers=headers)
            reply.raise_for_status()
            if b'"mode":"outcome"' in reply.content:         # a site missing: count it
                body = reply.json()
                partial.extend([i["diagnostics"] for e in body["entry"]
                            if e["search"]["mode"] == "outcome" for i in e["resource"]["issue"]])
            elif len(sizes) < 4:
                sizes.append(reply.json()["total"])
        await _load(everything, list(persons), args.readers, args.readers * 2)  # warm-up
        partial.clear()
        lat = await _load(everything, list(persons), args.readers, args.requests)
        mode = f"{mode}, _count={count}"
        print(f"{mode}: p50 {statistics.median(lat):.0f} ms, p99 {_pct(lat, 99):.0f} ms, "
              f"{len(partial)} partial", file=sys.stderr)
        return {"mode": mode, "lat": lat, "resources": sizes, "persons": persons,
                "partial": partial}


async def _measure_direct(args, persons: dict[str, dict[str, str]], ports: dict[str, int]
                          ) -> tuple[list[float], list[float], int]:
    from federation.gateway.node_clients import NodeClients
    from federation.security.tls import TlsMaterial

    t = _tls(args.pki, "gateway")
    clients = NodeClients(TlsMaterial.load(t.cert, t.key, t.ca), 64 << 20)
    counts: list[int] = []

    async def fetch(site: str, record: str) -> int:
        n = 0
        # not validated again, as the gateway under test is configured (sync_validate off)
        async for _ in clients.fetch(site, f"127.0.0.1:{ports[site]}", record, resource_types=[],
                                     correlation_id="bench", purpose="TREAT", timeout=300,
                                     validate=False):
            n += 1
        return n

    async def one_node(person: str) -> None:
        counts.append(await fetch(READER_SITE, persons[person][READER_SITE]))

    async def all_nodes(person: str) -> None:
        await asyncio.gather(*(fetch(s, persons[person][s]) for s in SITES))

    targets = list(persons)
    await _load(all_nodes, targets, args.readers, args.readers)
    one = await _load(one_node, targets, args.readers, args.requests)
    every = await _load(all_nodes, targets, args.readers, args.requests)
    await clients.close()
    return one, every, max(counts)


async def _sync_lag(args, samples: int) -> list[float]:
    from federation.nodes.fhir_mapping import stable_id

    his = args.data / "sites" / READER_SITE / "his.sqlite"
    gateway_db = args.work / "gateway-replicate.db"
    with sqlite3.connect(his) as db:
        patient = db.execute("SELECT PATIENT_ID FROM PAT_MASTER_INDEX LIMIT 1").fetchone()[0]
    lags = []
    for i in range(samples):
        report, result = f"RLAG{i:05d}", f"RLAG{i:05d}-1"
        rid = stable_id(READER_SITE, "Observation", result)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        t0 = time.perf_counter()
        with sqlite3.connect(his) as db:
            db.execute("INSERT INTO LAB_MASTER VALUES (?,?,?,?,?,?,?,?,?)",
                       (report, patient, None, "BIO", "生化", "血液", stamp, stamp, "F"))
            db.execute("INSERT INTO LAB_RESULT VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (result, report, patient, None, 1, "K", "钾", "2823-3", "4.2", "N",
                        "mmol/L", "3.5", "5.3", None, None, stamp))
        while True:
            with sqlite3.connect(f"file:{gateway_db}?mode=ro", uri=True) as db:
                if db.execute("SELECT 1 FROM site_resource WHERE resource_id = ?",
                              (rid,)).fetchone():
                    break
            await asyncio.sleep(0.01)
            if time.perf_counter() - t0 > 30:
                raise SystemExit("a change did not reach the gateway within 30 s")
        lags.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(random.uniform(0.05, 0.3))   # changes arrive at random times
    return lags


async def _parent(args: argparse.Namespace) -> None:
    from federation.security.ca import init_ca
    from federation.synth.heavy import heavy_records

    work = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    pki, data = work / "pki", work / "data"
    args.work, args.pki, args.data = work, pki, data
    ca = init_ca(pki / "ca", consortium="Bench")
    ca.issue_gateway(pki / "gateway")
    for site in SITES:
        ca.issue_node(site, {"city-1": "city", "township-a1": "township"}.get(site, "county"),
                      pki / site)
    t0 = time.perf_counter()
    heavy_records(data, persons=args.persons, resources_per_site=args.per_site)
    print(f"data: {args.persons} persons × {len(SITES)} sites × ~{args.per_site} resources "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    grpc_port, http_port = _free_port(), _free_port()
    common = ["--pki", str(pki), "--data", str(data), "--work", str(work),
              "--grpc-port", str(grpc_port), "--http-port", str(http_port),
              "--scan-ms", str(args.scan_ms)]
    results, lag = [], []
    gateway = Child("--role", "gateway", "--mode", "replicate", *common)
    gateway.event()
    nodes = Child("--role", "nodes", *common)
    ports = nodes.event()["ports"]
    try:
        replicate = await _measure_gateway(args, http_port, "replicate", 100)
        results.append(replicate)
        results.append(await _measure_gateway(args, http_port, "replicate", 5000))
        lag = await _sync_lag(args, args.lag_samples)
        gateway.stop()
        # the same first pages with no record index kept between reads: every read
        # builds its index (what a gateway answers for persons it has not seen lately)
        gateway = Child("--role", "gateway", "--mode", "replicate", "--index-cache-rows", "0",
                        *common)
        gateway.event()
        cold = await _measure_gateway(args, http_port, "replicate", 100)
        cold["mode"] += ", index cache off"
        results.append(cold)
        gateway.stop()
        gateway = Child("--role", "gateway", "--mode", "federate", *common)
        gateway.event()
        results.append(await _measure_gateway(args, http_port, "federate", 100))
        gateway.stop()
        one, every, per_node = await _measure_direct(args, replicate["persons"], ports)
    finally:
        gateway.stop()
        nodes.stop()
    base = statistics.median(every)
    print(f"\n$everything, {args.persons} persons, {args.readers} concurrent readers, "
          f"{args.requests} requests each row (2 cores shared: gateway, nodes, driver)")
    print(f"{'path':38} {'resources':>9} {'p50 ms':>8} {'p99 ms':>8} {'p50 / direct':>13}")
    for r in results:
        print(f"{'gateway ' + r['mode']:38} {max(r['resources'], default=0):>9} "
              f"{statistics.median(r['lat']):>8.0f} {_pct(r['lat'], 99):>8.0f} "
              f"{statistics.median(r['lat']) / base:>13.2f}")
        if r["partial"]:
            print(f"  {len(r['partial'])} site answers missing, e.g. {r['partial'][0]}")
    print(f"{'direct: 4 nodes in parallel (gRPC)':38} {per_node * len(SITES):>9} "
          f"{base:>8.0f} {_pct(every, 99):>8.0f} {1:>13.2f}")
    print(f"{'direct: one node (' + READER_SITE + ')':38} {per_node:>9} "
          f"{statistics.median(one):>8.0f} {_pct(one, 99):>8.0f} "
          f"{statistics.median(one) / base:>13.2f}")
    print(f"\nsync lag, change at city-1 → visible at the gateway ({len(lag)} changes, node "
          f"scan every {args.scan_ms} ms): p50 {statistics.median(lag):.0f} ms, "
          f"p99 {_pct(lag, 99):.0f} ms")
    print("aims: replicate p99 ≤ 150 ms, federate p99 ≤ 500 ms, sync lag p99 ≤ 2000 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("parent", "nodes", "gateway"), default="parent")
    parser.add_argument("--mode", default="replicate")
    parser.add_argument("--persons", type=int, default=4)
    parser.add_argument("--per-site", type=int, default=500)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--lag-samples", type=int, default=30)
    parser.add_argument("--scan-ms", type=int, default=500)
    parser.add_argument("--index-cache-rows", type=int, default=30_000,
                        help="the gateway's archive_index_cache_rows (a child's setting)")
    for name in ("pki", "data", "work"):
        parser.add_argument(f"--{name}", type=Path)
    parser.add_argument("--grpc-port", type=int)
    parser.add_argument("--http-port", type=int)
    args = parser.parse_args()
    role = {"parent": _parent, "nodes": _nodes, "gateway": _gateway}[args.role]
    asyncio.run(role(args))


if __name__ == "__main__":
    main()
