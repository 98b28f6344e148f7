#!/usr/bin/env python3
"""Unary RPC throughput and latency: the gateway over mTLS vs a bare grpcio server.

Each server runs in its own process; one load process drives it with N concurrent
clients (one channel each, calls back to back) for a fixed time, and the same load
then drives the next server, so the ratios compare like with like in one run.

The call is ``Gateway.Heartbeat`` — the call every node makes most often:
  * gateway       the real gateway: mTLS, certificate identity + CRL check, role policy,
                  metrics, logging, and the heartbeat recorded in its SQLite store
                  (write-behind, flushed every 0.5 s)
  * bare+store    plain grpc.aio, no TLS, no guard, no metrics/logging, the same
                  registry and store (same write-behind flush)
  * bare          plain grpc.aio answering the same call without touching a store

    python bench/rpc_throughput.py                    # 32 clients, 8 s per server
    python bench/rpc_throughput.py --clients 32 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SITE = "county-a"


# ---------------------------------------------------------------------------- servers


def _pki(root: Path) -> None:
    from federation.security.ca import init_ca

    ca = init_ca(root / "ca")
    ca.issue_gateway(root / "gateway")
    ca.issue_node(SITE, "county", root / SITE)


def _store(db: Path):
    from federation.store import GatewayStore, make_engine, upgrade

    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    store = GatewayStore(engine)
    store.upsert_site(SITE, "东阳县人民医院", "county")
    store.register_node(SITE, endpoint="127.0.0.1:1", cert_serial="00", cert_fingerprint="00",
                        software_version="bench", capabilities=[], now=dt.datetime.now(dt.UTC))
    return store


async def _serve_gateway(root: Path, ready: mp.Queue) -> None:
    from federation.gateway.app import start_gateway
    from federation.settings import GatewaySettings, SiteEntry, TlsSettings

    settings = GatewaySettings(
        grpc_rate_per_node=1e6, http_rate_per_user=1e6,  # measure the server, not the limits
        database_url=f"sqlite:///{root / 'gateway.db'}", grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        tls=TlsSettings(root / "gateway" / "gateway.crt", root / "gateway" / "gateway.key",
                        root / "ca" / "ca.crt", root / "ca" / "crl.pem"),
        sites=(SiteEntry(SITE, "东阳县人民医院", "county"),),
        heartbeat_interval_ms=60_000,
    )
    gw = await start_gateway(settings)
    from federation.gateway.registry import NodeRegistry  # noqa: F401 - warm imports

    gw.store.register_node(SITE, endpoint="127.0.0.1:1", cert_serial="00", cert_fingerprint="00",
                           software_version="bench", capabilities=[], now=dt.datetime.now(dt.UTC))
    ready.put(gw.grpc_port)
    await asyncio.Event().wait()


async def _serve_bare(root: Path, ready: mp.Queue, with_store: bool) -> None:
    import grpc

    from federation._proto.v1 import gateway_pb2, gateway_pb2_grpc
    from federation.gateway.registry import NodeRegistry, utcnow
    from federation.rpc.wire import timestamp
    from federation.security.identity import PeerIdentity

    registry = NodeRegistry(_store(root / "bare.db"), unreachable_after=dt.timedelta(minutes=5)) \
        if with_store else None
    peer = PeerIdentity(role="node", name=SITE, site_id=SITE, tier="county", serial="00",
                        fingerprint_sha256="00", not_after=utcnow())

    class Bare(gateway_pb2_grpc.GatewayServicer):
        async def Heartbeat(self, request, context):
            reregister = False
            if registry is not None:
                reregister = (await registry.heartbeat(peer, request.sequence)).reregister
            return gateway_pb2.HeartbeatResponse(
                heartbeat_interval_ms=60_000, server_time=timestamp(utcnow()), reregister=reregister)

    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServicer_to_server(Bare(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    if registry is not None:  # the same write-behind flush the gateway runs
        asyncio.get_running_loop().create_task(registry.flush_forever(0.5, asyncio.Event()))
    ready.put(port)
    await server.wait_for_termination()


def _server_main(kind: str, root: str, ready: mp.Queue) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    path = Path(root)
    if kind == "gateway":
        asyncio.run(_serve_gateway(path, ready))
    else:
        asyncio.run(_serve_bare(path, ready, with_store=(kind == "bare+store")))


# ---------------------------------------------------------------------------- load


async def _drive(kind: str, port: int, root: Path, clients: int, seconds: float, warmup: float):
    import grpc

    from federation._proto.v1 import gateway_pb2, gateway_pb2_grpc

    if kind == "gateway":
        from federation.rpc.channels import secure_channel
        from federation.security.ca import GATEWAY_SERVER_NAME
        from federation.security.tls import TlsMaterial

        tls = TlsMaterial.load(root / SITE / f"{SITE}.crt", root / SITE / f"{SITE}.key",
                               root / "ca" / "ca.crt")
        channels = [secure_channel(f"127.0.0.1:{port}", tls, 4 << 20,
                                   server_name=GATEWAY_SERVER_NAME) for _ in range(clients)]
    else:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.monotonic() + warmup + seconds

    async def client(channel) -> None:
        nonlocal errors
        stub = gateway_pb2_grpc.GatewayStub(channel)
        seq = 0
        while time.monotonic() < stop_at:
            seq += 1
            t0 = time.perf_counter()
            try:
                await stub.Heartbeat(gateway_pb2.HeartbeatRequest(sequence=seq), timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            if measuring:
                latencies.append(time.perf_counter() - t0)

    async def flip() -> None:
        nonlocal measuring
        await asyncio.sleep(warmup)
        measuring = True

    started = time.monotonic()
    await asyncio.gather(flip(), *(client(c) for c in channels))
    elapsed = time.monotonic() - started - warmup
    for c in channels:
        await c.close()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000,
            "calls": len(latencies), "errors": errors}


def run(kind: str, root: Path, clients: int, seconds: float, warmup: float) -> dict:
    ctx = mp.get_context("spawn")
    ready: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_server_main, args=(kind, str(root), ready), daemon=True)
    proc.start()
    try:
        port = ready.get(timeout=60)
        return asyncio.run(_drive(kind, port, root, clients, seconds, warmup))
    finally:
        proc.terminate()
        proc.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _pki(root)
        results = {kind: run(kind, root, args.clients, args.seconds, args.warmup)
                   for kind in ("bare", "bare+store", "gateway")}
    print(f"Gateway.Heartbeat, {args.clients} concurrent clients, {args.seconds:.0f} s each "
          f"(after {args.warmup:.0f} s warm-up), loopback, {mp.cpu_count()} cores")
    print(f"{'server':<12} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for kind, r in results.items():
        print(f"{kind:<12} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>7}")
    g = results["gateway"]["rps"]
    print(f"ratio gateway / bare+store = {g / results['bare+store']['rps']:.2f}")
    print(f"ratio gateway / bare       = {g / results['bare']['rps']:.2f}   (target >= 0.5)")


if __name__ == "__main__":
    main()
