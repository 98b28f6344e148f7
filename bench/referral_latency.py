"""Referral delivery: created at the county node → visible in the city node's inbox.

    .venv/bin/python bench/referral_latency.py [--latency 200] [--seconds 10]
        [--concurrency 8] [--outage 1000] [--database-url postgresql+psycopg://…]

Sets up the demo consortium's CA, certificates and data in a temporary folder (or
``--workdir``), starts the gateway, county-a's node and city-1's node as processes
(``federation gateway serve``, ``federation node serve``; logs in ``<workdir>/logs``),
all over mutual TLS on loopback; this process is only the client. The
county node creates each referral (``Referrals.Create`` with its node certificate, acting
for dr-wang): the gateway checks the rules and consent, resolves the EMPI person, stores
the referral and queues it (Task, ServiceRequest, Consent) for the city; then fetches the
packet (the patient's recent record) from the county node and queues it behind. The city
node's link stores each in its inbox. Latency = the city node's ``received_at`` minus the
moment before the Create call (one clock: the same machine), for the referral and for
its packet.

Three phases:

1. **latency** — ``--latency`` referrals one after another, the target up: p50/p99;
2. **sustained** — ``--concurrency`` creators for ``--seconds``: referrals/s created and
   delivered, latency under load;
3. **outage** — ``--outage`` referrals created by ``--concurrency`` creators while the
   city node is killed (SIGKILL) after 30 % and restarted after 70 %: delivered, lost
   (must be 0) and duplicated in the inbox (must be 0), and how long the backlog took.

Exit status 1 when anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _shared import caught_up, inbox_received, linked_patients, percentile  # path first

from federation.demo.runner import Supervisor, consortium_state
from federation.demo.workspace import DemoLayout, prepare_workspace
from federation.referral.client import ReferralClient
from federation.referral.service import NewReferral
from federation.security.tls import TlsMaterial
from federation.settings import load_node_settings

TARGET, ORIGIN = "city-1", "county-a"
CALLS: list[float] = []   # Create call durations, ms


def _summary(label: str, lat_ms: list[float]) -> str:
    if not lat_ms:
        return f"{label}: no deliveries"
    return (f"{label}: n={len(lat_ms)} p50={statistics.median(lat_ms):.1f} ms "
            f"p99={percentile(lat_ms, 0.99):.1f} ms max={max(lat_ms):.1f} ms")


class CityInbox:
    """Reads city-1's node inbox (its own SQLite file) while the node runs."""

    def __init__(self, layout: DemoLayout) -> None:
        settings = load_node_settings(layout.node_configs[TARGET])
        self.path = settings.state_dir / "inbox.sqlite"

    def received(self, which: str = "referral") -> dict[str, list[float]]:
        """See :func:`_shared.inbox_received`."""
        return inbox_received(self.path, which)


def _node_state(layout: DemoLayout, site: str) -> str:
    state = {s["site_id"]: (s.get("node") or {}).get("state")
             for s in consortium_state(layout)}
    return state.get(site) or "none"


async def _wait_for(ids: set[str], city: CityInbox, timeout: float,
                    which: str = "referral") -> dict[str, list[float]]:
    deadline = time.monotonic() + timeout
    while True:
        got = city.received(which)
        if ids <= set(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def _creator(client: ReferralClient, patients: list[str], created: dict[str, float],
                   stop: asyncio.Event, budget: list[int], n: int) -> None:
    i = n
    while not stop.is_set() and budget[0] > 0:
        budget[0] -= 1
        started = time.time()
        ref, _ = await client.create(NewReferral(
            patient_id=patients[i % len(patients)], urgency="urgent", target_site=TARGET,
            department="cardiology", consent_method="written",
            reason={"system": "http://hl7.org/fhir/sid/icd-10", "code": "I21.9"}))
        created[ref.id] = started
        CALLS.append((time.time() - started) * 1000)
        i += 7


async def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="referral-bench-"))
    layout = prepare_workspace(workdir, people=args.people)
    url = args.database_url or f"sqlite:///{workdir}/gateway.db"
    os.environ["FEDERATION_DATABASE_URL"] = url      # for the gateway process
    sup = Supervisor(layout)
    sup.start_gateway()
    sup.start_node(ORIGIN)
    sup.start_node(TARGET)
    city = CityInbox(layout)
    node_tls = TlsMaterial.load(workdir / "pki" / ORIGIN / f"{ORIGIN}.crt",
                                workdir / "pki" / ORIGIN / f"{ORIGIN}.key", layout.ca_cert)
    clients = [ReferralClient(layout.grpc_address, node_tls, practitioner=("dr-wang", "doctor"))
               for _ in range(args.concurrency)]
    lost = duplicated = 0
    try:
        patients: list[str] = []
        for _ in range(600):            # two minutes
            if all(_node_state(layout, s) == "online" for s in (ORIGIN, TARGET)) and \
                    await asyncio.to_thread(caught_up, url, (ORIGIN, TARGET)):
                break
            await asyncio.sleep(0.2)
        else:
            raise SystemExit(f"the gateway's archive did not catch up with {ORIGIN} and "
                             f"{TARGET}, or the nodes are not online (the gateway's "
                             f"/api/consortium): see {workdir / 'logs'}")
        await asyncio.sleep(args.settle)
        patients = await asyncio.to_thread(linked_patients, url, ORIGIN)
        print(f"gateway {layout.grpc_address} ({url.split(':')[0]}), {len(patients)} linked "
              f"patients at {ORIGIN}; gateway, {ORIGIN} and {TARGET} nodes are processes")
        # warm-up: channels, caches
        await _creator(clients[0], patients, {}, asyncio.Event(), [5], 0)

        # 1. latency, one at a time
        created: dict[str, float] = {}
        for n in range(args.latency):
            await _creator(clients[0], patients, created, asyncio.Event(), [1], n)
        got = await _wait_for(set(created), city, 30)
        lat = [(got[r][0] - t) * 1000 for r, t in created.items() if r in got]
        print(_summary("referral visible, target up, sequential", lat))
        print(_summary("  of which the Create call", CALLS[-len(created):]))
        got = await _wait_for(set(created), city, 30, "packet")
        lat = [(got[r][0] - t) * 1000 for r, t in created.items() if r in got]
        print(_summary("packet visible, target up, sequential", lat))

        # 2. sustained
        created = {}
        stop = asyncio.Event()
        started = time.monotonic()
        tasks = [asyncio.create_task(_creator(c, patients, created, stop, [10**9], n))
                 for n, c in enumerate(clients)]
        await asyncio.sleep(args.seconds)
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        got = await _wait_for(set(created), city, 60)
        last = max((got[r][0] for r in created if r in got), default=time.time())
        first = min(created.values())
        lat = [(got[r][0] - t) * 1000 for r, t in created.items() if r in got]
        print(f"sustained, {args.concurrency} creators, {elapsed:.1f} s: "
              f"{len(created) / elapsed:.1f} referrals/s created, "
              f"{len(lat) / (last - first):.1f}/s delivered")
        print(_summary("referral visible under that load", lat))
        got = await _wait_for(set(created), city, 60, "packet")
        lat = [(got[r][0] - t) * 1000 for r, t in created.items() if r in got]
        print(_summary("packet visible under that load", lat))

        # 3. outage: kill the target at 30 %, restart it at 70 %
        created = {}
        budget = [args.outage]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_creator(c, patients, created, stop, budget, n))
                 for n, c in enumerate(clients)]
        killed = restarted = None
        while any(not t.done() for t in tasks):
            if killed is None and len(created) >= 0.3 * args.outage:
                sup.procs[TARGET].send_signal(signal.SIGKILL)
                sup.procs[TARGET].wait()
                killed = len(created)
            if killed is not None and restarted is None and len(created) >= 0.7 * args.outage:
                sup.start_node(TARGET)
                restarted = len(created)
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        done_at = time.time()
        for which in ("referral", "packet"):
            got = await _wait_for(set(created), city, 180, which)
            delivered = [r for r in created if r in got]
            missing = len(created) - len(delivered)
            twice = sum(len(v) - 1 for r, v in got.items() if r in created)
            lost, duplicated = lost + missing, duplicated + twice
            backlog = max((got[r][0] for r in delivered), default=done_at) - done_at
            print(f"outage, {which}s: {len(created)} created; {TARGET} killed after {killed}, "
                  f"restarted after {restarted}: delivered {len(delivered)}, lost {missing}, "
                  f"duplicated in inbox {twice}; last one stored {max(0.0, backlog):.1f} s "
                  "after the last create")
    finally:
        for c in clients:
            await c.close()
        sup.stop_all()
    return 1 if lost or duplicated else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--outage", type=int, default=1000)
    parser.add_argument("--people", type=int, default=80)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait once the archive has caught up")
    parser.add_argument("--workdir")
    parser.add_argument("--database-url", help="e.g. postgresql+psycopg://postgres@127.0.0.1/x")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
