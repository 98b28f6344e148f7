#!/usr/bin/env python3
"""Referral throughput and latency through 1, 2 and 3 gateway replicas on one PostgreSQL.

    python bench/referral_replicas.py                    # k = 1,2,3; 12 clients; 40 s each
    python bench/referral_replicas.py --with-archive     # and the archive read curve after

For each k: a fresh demo workspace (CA, certificates, site data) and a fresh throwaway
PostgreSQL database (``FEDERATION_TEST_POSTGRES_URL``'s server, default 127.0.0.1:5432,
dropped afterwards); k ``federation gateway serve`` processes on it; county-a's and
city-1's node agents as ``federation node serve`` processes given all k replicas
(``gateway = "ip:port,…"``, round-robin). Once the archive has read both nodes' feeds,
this process creates referrals as a doctor does with the referral CLI
(``Referrals.Create`` with dr-wang's person certificate, each with its own idempotency
key) from ``--clients`` concurrent clients, client i on replica i mod k, back to back,
for ``--warmup`` + ``--seconds``. Measured over the ``--seconds`` window: referrals
created per second, the Create call's p50/p99, and delivery — city-1's inbox
``received_at`` minus the moment before the Create call (one machine, one clock) —
p50/p99. Then it waits for every referral to reach city-1's inbox and checks that none
was lost (created, never delivered) or duplicated (two tasks for one idempotency key,
two inbox entries for one referral).

Each referral's packet (the patient's recent record, fetched from the origin node by a
leased job) follows it in the background and competes for the same cores; packets are
counted, not waited for. One JSON line per k, then a table. Exit status 1 when anything
was lost or duplicated.

Everything — k replicas, PostgreSQL, two nodes and this load — shares the machine's
cores: on a 2-core machine the curve shows contention, not what separate machines give.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _shared import caught_up, inbox_received, linked_patients, machine, percentile

from federation._cli_util import person_credentials
from federation.demo.runner import Supervisor
from federation.demo.workspace import DemoLayout, prepare_workspace
from federation.errors import FederationError
from federation.referral.client import ReferralClient
from federation.referral.service import NewReferral
from federation.settings import load_node_settings
from federation.store import make_engine, upgrade
from tests.deploy.gateways import Gateways, until
from tests.pg_util import throwaway_database

ORIGIN, TARGET = "county-a", "city-1"
DOCTOR = "dr-wang"                 # county-a's doctor (a person certificate)


def _point_nodes_at(layout: DemoLayout, addresses: str) -> None:
    """Give both nodes every replica (their configs are rewritten on each workspace
    preparation anyway)."""
    for site in (ORIGIN, TARGET):
        path = layout.node_configs[site]
        lines = [f'gateway = "{addresses}"' if line.startswith("gateway =") else line
                 for line in path.read_text().splitlines()]
        path.write_text("\n".join(lines) + "\n")


def _tasks_per_key(url: str, prefix: str) -> dict[str, int]:
    """Idempotency key → how many referral tasks the store holds under it."""
    from sqlalchemy import text

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {r.request_id: r.n for r in conn.execute(text(
                "SELECT request_id, count(*) AS n FROM workflow_task WHERE request_id "
                "LIKE :p GROUP BY request_id"), {"p": f"{prefix}%"})}
    finally:
        engine.dispose()


class Load:
    """Closed-loop creators: each client creates a referral, waits for the answer, again."""

    def __init__(self, clients: list[ReferralClient], patients: list[str], prefix: str,
                 on_measure: Callable[[], object] | None = None) -> None:
        self.clients, self.patients, self.prefix = clients, patients, prefix
        self.on_measure = on_measure                        # called as the window opens
        self.created: dict[str, tuple[float, bool]] = {}   # id → (time before call, measured)
        self.calls: list[float] = []                        # measured Create calls, s
        self.keys: list[str] = []                           # every idempotency key sent
        self.errors: list[str] = []
        self.done_in_window = 0                             # creates answered in the window
        self.measuring = False
        self._n = 0

    async def _client(self, client: ReferralClient, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            self._n += 1
            key = f"{self.prefix}{self._n}"
            self.keys.append(key)
            measured = self.measuring
            started = time.time()
            t0 = time.perf_counter()
            try:
                ref, _ = await client.create(NewReferral(
                    patient_id=self.patients[self._n % len(self.patients)], urgency="urgent",
                    direction="upward", target_site=TARGET, department="cardiology",
                    consent_method="written", request_id=key,
                    reason={"system": "http://hl7.org/fhir/sid/icd-10", "code": "I21.9"}))
            except FederationError as exc:
                self.errors.append(type(exc).__name__)
                continue
            self.done_in_window += self.measuring
            if measured and self.measuring:     # started and finished inside the window
                self.calls.append(time.perf_counter() - t0)
            self.created[ref.id] = (started, measured and self.measuring)

    async def run(self, warmup: float, seconds: float) -> float:
        """Drive for ``warmup`` + ``seconds``; the measured window's length."""
        stop_at = time.monotonic() + warmup + seconds
        tasks = [asyncio.create_task(self._client(c, stop_at)) for c in self.clients]
        await asyncio.sleep(warmup)
        if self.on_measure is not None:
            self.on_measure()
        self.measuring, began = True, time.monotonic()
        await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
        self.measuring, window = False, time.monotonic() - began
        await asyncio.gather(*tasks)
        return window


async def one_k(k: int, workdir: Path, args: argparse.Namespace) -> dict:
    layout = await asyncio.to_thread(prepare_workspace, workdir, people=args.people)
    inbox = load_node_settings(layout.node_configs[TARGET]).state_dir / "inbox.sqlite"
    with throwaway_database(prefix="fed_refrep") as url:
        await asyncio.to_thread(upgrade, url)            # the migration Job, once
        gateways = Gateways(layout, url, k)
        nodes = Supervisor(layout)
        clients: list[ReferralClient] = []
        try:
            for i in range(k):                           # the first creates the key ring
                await gateways.start(i)
            _point_nodes_at(layout, gateways.addresses)
            nodes.start_node(ORIGIN)
            nodes.start_node(TARGET)
            await until(lambda: caught_up(url, (ORIGIN, TARGET)), 300,
                        "the archive to read both nodes' feeds")
            await asyncio.sleep(args.settle)
            patients = await asyncio.to_thread(linked_patients, url, ORIGIN)
            doctor = person_credentials(layout.staff[DOCTOR])
            clients = [ReferralClient(gateways.address(i % k), doctor)
                       for i in range(args.clients)]
            profiler: list[subprocess.Popen] = []

            def start_profiler() -> None:
                named = {f"gateway-{i + 1}": p.pid for i, p in enumerate(gateways.procs) if p}
                named |= {f"node-{n}": p.pid for n, p in nodes.procs.items()}
                named["load-driver"] = os.getpid()
                profiler.append(subprocess.Popen(
                    [sys.executable, str(Path(__file__).with_name("pg_profile.py")),
                     "--url", url, "--seconds", str(args.seconds),
                     "--pids", ",".join(f"{n}={p}" for n, p in named.items()),
                     "--out", str(args.profile / f"k{k}.json")], stdout=subprocess.DEVNULL))

            load = Load(clients, patients, prefix=f"bench-k{k}-",
                        on_measure=start_profiler if args.profile else None)
            print(f"k={k}: {len(patients)} linked patients at {ORIGIN}; driving "
                  f"{args.clients} clients for {args.warmup:.0f} + {args.seconds:.0f} s "
                  f"({machine()})", file=sys.stderr, flush=True)
            window = await load.run(args.warmup, args.seconds)
            for proc in profiler:
                await asyncio.to_thread(proc.wait, 30)
            at_end = machine()
            ids = set(load.created)
            drain_started = time.monotonic()
            got: dict[str, list[float]] = {}

            def all_delivered() -> bool:
                nonlocal got
                got = inbox_received(inbox)
                return ids <= set(got)
            try:
                await until(all_delivered, args.drain, "every referral in the target's inbox")
            except AssertionError:
                pass                                     # counted as lost below
            drain = time.monotonic() - drain_started
            packets = inbox_received(inbox, "packet")
            per_key = await asyncio.to_thread(_tasks_per_key, url, load.prefix)
        finally:
            for c in clients:
                await c.close()
            nodes.stop_all()
            gateways.stop_all()
        tracebacks = sum((layout.logs / f"gateway-{i + 1}.log").read_text(errors="replace")
                         .count("Traceback") for i in range(k))

    if args.profile:                  # the per-referral figures, beside the raw profile
        prof_path = args.profile / f"k{k}.json"
        prof = json.loads(prof_path.read_text())
        n = max(1, load.done_in_window)
        prof["per_referral"] = {
            "referrals": load.done_in_window,
            **{f"{key}_per_referral": round(v / n, 1)
               for key, v in prof["pg_stat_database"].items()},
            **({"statements_per_referral":
                round(prof["statements_total"]["calls"] / n, 1),
                "statement_exec_ms_per_referral":
                round(prof["statements_total"]["exec_ms"] / n, 1)}
               if "statements_total" in prof else {}),
            "cpu_ms_per_referral": {
                key: round(v * 1000 / n) for key, v in prof["cpu_s"].items() if v is not None}}
        prof_path.write_text(json.dumps(prof, indent=1, ensure_ascii=False))
    measured = {r: t for r, (t, m) in load.created.items() if m}
    delivered_ms = [(got[r][0] - t) * 1000 for r, t in measured.items() if r in got]
    return {
        "replicas": k, "clients": args.clients, "seconds": round(window, 1),
        "created_per_s": round(load.done_in_window / window, 1),
        "create_p50_ms": round(percentile(load.calls, 0.5) * 1000, 1),
        "create_p99_ms": round(percentile(load.calls, 0.99) * 1000, 1),
        "delivered_p50_ms": round(percentile(delivered_ms, 0.5), 1),
        "delivered_p99_ms": round(percentile(delivered_ms, 0.99), 1),
        "created_total": len(ids), "errors": len(load.errors),
        "stored_tasks": sum(per_key.values()),
        "lost": len(ids - set(got)),
        "duplicated": sum(n - 1 for n in per_key.values()) +
                      sum(len(v) - 1 for r, v in got.items() if r in ids),
        "drain_s": round(drain, 1),
        "packets_delivered": len(ids & set(packets)),
        "gateway_tracebacks": tracebacks,
        "machine_at_end": at_end,
    }


def _table(results: list[dict]) -> str:
    head = (f"{'replicas':>8} {'created/s':>9} {'create p50':>10} {'p99 ms':>7} "
            f"{'delivered p50':>13} {'p99 ms':>7} {'created':>7} {'lost':>4} {'dup':>3} "
            f"{'errors':>6} {'packets':>7}  machine at the end")
    rows = [f"{r['replicas']:>8} {r['created_per_s']:>9.1f} {r['create_p50_ms']:>10.0f} "
            f"{r['create_p99_ms']:>7.0f} {r['delivered_p50_ms']:>13.0f} "
            f"{r['delivered_p99_ms']:>7.0f} {r['created_total']:>7} {r['lost']:>4} "
            f"{r['duplicated']:>3} {r['errors']:>6} {r['packets_delivered']:>7}  "
            f"{r['machine_at_end']}" for r in results]
    return "\n".join([head, *rows])


async def run(args: argparse.Namespace) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="referral-replicas-") as tmp:
        for k in (int(x) for x in args.replicas.split(",")):
            result = await one_k(k, Path(tmp) / f"k{k}", args)
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--clients", type=int, default=12,
                        help="concurrent creators, spread round-robin over the replicas")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured window per k")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--people", type=int, default=80)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait once the archive has caught up")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="how long to wait for the last referrals to be delivered")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample PostgreSQL and per-process CPU over each measured window "
                             "(bench/pg_profile.py) into DIR/k<k>.json")
    parser.add_argument("--with-archive", action="store_true",
                        help="then the archive read curve of replicas.py, same replica counts")
    parser.add_argument("--archive-seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    results = asyncio.run(run(args))
    print(f"\nReferrals.Create (dr-wang's person certificate), {args.clients} clients "
          f"round-robin over the replicas, {args.seconds:.0f} s after {args.warmup:.0f} s "
          f"warm-up; delivered = in city-1's inbox; one PostgreSQL; all on one machine")
    print(_table(results))
    if args.with_archive:
        import replicas

        shape = {"seconds": args.archive_seconds}
        curve = replicas.run([r["replicas"] for r in results], **shape)
        for k, r in curve.items():
            print(json.dumps({"archive_replicas": k, **{
                key: (round(v, 1) if isinstance(v, float) else v) for key, v in r.items()}}))
        replicas.print_table(curve, **shape)
    sys.exit(1 if any(r["lost"] or r["duplicated"] for r in results) else 0)


if __name__ == "__main__":
    main()
