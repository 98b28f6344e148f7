#!/usr/bin/env python3
"""Full initial sync of one site (≥ 100,000 resources) to the gateway over mTLS.

The gateway and the node run as two OS processes (this script with ``--role gateway`` /
``--role node``), started through ``federation``'s own ``start_gateway`` /
``start_node`` with a throwaway PKI, real mutual TLS on loopback and a SQLite gateway
store; the parent drives them over stdin/stdout (JSON lines) and prints the table.

One run, per gateway setting (``sync_validate`` on, then off):

  1. node start     ``start_node`` with a fresh state dir; the gateway is *not yet
                    listening*, so the node's first scan (source → FHIR → feed.sqlite)
                    runs alone. Its end is taken from the feed's own "change feed: …
                    scanned" log record (the scan task in ``start_node``).
  2. gateway start  then the gateway process calls ``start_gateway``; the node's link
                    (retrying every ≤ 0.2 s) registers, and the gateway pulls the whole
                    feed (registration triggers the pull; ``sync_interval_ms`` is large
                    so no scheduled pull races it).
  3. caught up      when ``archive.cursor(site).after`` reaches the node's head.

  scan s      node start → first scan recorded in the feed        (node process clock)
  transfer s  node registered → gateway cursor at the node's head (gateway process clock)
  total s     node start → gateway caught up  (sequential: scan, gateway start, pull)

The pull's own ``duration_ms`` from the exchange log is printed too. ``--live`` adds a
run in deployment order (gateway up first, node started after: the pull overlaps the
scan, so only its total is comparable).

    python bench/initial_sync.py                     # 7500 people, validate on and off
    python bench/initial_sync.py --people 8000 --live
    python bench/initial_sync.py --validate          # only with gateway validation
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SITE = "city-1"
SEED = 20261122
TARGET_S = 60.0
MIN_RESOURCES = 100_000


def _emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _tls(pki: Path, name: str):
    from federation.settings import TlsSettings

    return TlsSettings(cert=pki / name / f"{name}.crt", key=pki / name / f"{name}.key",
                       ca=pki / "ca" / "ca.crt", crl=pki / "ca" / "crl.pem")


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
    """Commands from the parent, one JSON object a line, as an asyncio queue."""
    queue: asyncio.Queue = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
        loop.call_soon_threadsafe(queue.put_nowait, {"cmd": "stop"})

    threading.Thread(target=read, daemon=True).start()
    return queue


# ---------------------------------------------------------------------------- node


class _ScanDone(logging.Handler):
    """Catches the feed's "change feed: N scanned, …; head H" record (feed.apply_scan)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.INFO)
        self.loop = loop
        self.done = asyncio.Event()
        self.at = 0.0
        self.args: tuple = ()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("change feed:") and not self.done.is_set():
            self.at, self.args = time.time(), tuple(record.args or ())
            self.loop.call_soon_threadsafe(self.done.set)


async def _node(args: argparse.Namespace) -> None:
    from federation.nodes.agent import start_node
    from federation.settings import NodeSettings
    from federation.synth import load_manifest

    loop = asyncio.get_running_loop()
    commands = _stdin_lines(loop)
    spec = load_manifest(args.consortium).site(SITE)
    hook = _ScanDone(loop)
    feed_log = logging.getLogger("federation.node.feed")
    feed_log.setLevel(logging.INFO)
    feed_log.addHandler(hook)
    settings = NodeSettings(
        site_id=SITE, listen="127.0.0.1:0", gateway=f"127.0.0.1:{args.gateway_port}",
        tls=_tls(args.pki, SITE), source=spec.source_settings(), state_dir=args.state,
        backoff_initial_ms=50, backoff_max_ms=200, feed_scan_interval_ms=3_600_000)
    started = time.time()
    running = await start_node(settings)
    _emit(event="started", at=started, port=running.port)
    await hook.done.wait()
    counts = await asyncio.to_thread(running.feed.count)
    head = await asyncio.to_thread(running.feed.head)
    _emit(event="scanned", at=hook.at, head=head, resources=sum(counts.values()),
          counts=counts, scanned=hook.args[0] if hook.args else None,
          quarantined=len(running.service.quarantined()), rss_mib=_peak_rss_mib())
    while (await commands.get()).get("cmd") != "stop":
        pass
    await running.stop(1.0)
    _emit(event="stopped", rss_mib=_peak_rss_mib())


# ---------------------------------------------------------------------------- gateway


async def _gateway(args: argparse.Namespace) -> None:
    from federation.archive.sync import OPERATION
    from federation.gateway.app import start_gateway
    from federation.settings import GatewaySettings, SiteEntry
    from federation.synth import load_manifest

    loop = asyncio.get_running_loop()
    commands = _stdin_lines(loop)
    manifest = load_manifest(args.consortium)
    settings = GatewaySettings(
        grpc_rate_per_node=1e6, http_rate_per_user=1e6,  # measure the server, not the limits
        database_url=f"sqlite:///{args.state / 'gateway.db'}",
        grpc_listen=f"127.0.0.1:{args.gateway_port}", http_listen="127.0.0.1:0",
        tls=_tls(args.pki, "gateway"),
        sites=tuple(SiteEntry(s.site_id, s.name, s.tier, s.parent_site_id)
                    for s in manifest.sites),
        sync_interval_ms=3_600_000, sync_validate=args.validate)
    _emit(event="ready")  # imports done; wait for the parent's word to listen
    target: int | None = None
    while True:
        cmd = await commands.get()
        if cmd["cmd"] == "start":
            target = cmd.get("head")
            break
        if cmd["cmd"] == "stop":
            return
    running = await start_gateway(settings)
    _emit(event="listening", at=time.time())

    registered = 0.0
    while True:  # poll the store: registration, then the cursor reaching the node's head
        while not commands.empty():
            cmd = commands.get_nowait()
            if cmd["cmd"] == "target":
                target = cmd["head"]
            elif cmd["cmd"] == "stop":
                await running.stop(1.0)
                return
        if not registered:
            node = await asyncio.to_thread(running.store.get_node, SITE)
            if node is not None and node.state == "online":
                registered = time.time()
                _emit(event="registered", at=registered)
        cursor = await asyncio.to_thread(running.archive.cursor, SITE)
        if target is not None and cursor is not None and cursor.after >= target:
            caught = time.time()
            break
        await asyncio.sleep(0.02)

    await asyncio.sleep(0.1)  # let the pull's exchange-log row be written
    pulls = [e for e in await asyncio.to_thread(running.store.list_exchanges, site=SITE)
             if e.operation == OPERATION]
    counts = (await asyncio.to_thread(running.archive.counts, SITE)).get(SITE, {})
    _emit(event="caught_up", at=caught, registered=registered, after=cursor.after,
          rejected=cursor.rejected, stored=sum(counts.values()),
          pulls=[{"records": e.records, "ms": e.duration_ms, "outcome": e.outcome}
                 for e in reversed(pulls)],
          rss_mib=_peak_rss_mib())
    while (await commands.get()).get("cmd") != "stop":
        pass
    await running.stop(1.0)
    _emit(event="stopped", rss_mib=_peak_rss_mib())


# ---------------------------------------------------------------------------- parent


class _Child:
    def __init__(self, role: str, argv: list[str], log_path: Path) -> None:
        self.role = role
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--role", role, *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def expect(self, event: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == event:
                return msg
        raise RuntimeError(f"{self.role} process ended (exit {self.proc.wait()}) before "
                           f"'{event}'; see {self.log.name}")

    def close(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """Ask for a clean stop; returns the final message (peak RSS) or None."""
        final = None
        try:
            if self.proc.poll() is None:
                self.send(cmd="stop")
                final = self.expect("stopped")
            self.proc.wait(timeout)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            self.log.close()
        return final


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(label: str, work: Path, consortium: Path, pki: Path, *, validate: bool,
         live: bool) -> dict[str, Any]:
    run_dir = work / label
    (run_dir / "gateway").mkdir(parents=True)
    port = _free_port()
    common = ["--consortium", str(consortium), "--pki", str(pki),
              "--gateway-port", str(port)]
    gateway = _Child("gateway", [*common, "--state", str(run_dir / "gateway"),
                                 "--validate" if validate else "--no-validate"],
                     run_dir / "gateway.log")
    node = None
    try:
        gateway.expect("ready")
        if live:
            gateway.send(cmd="start")
            gateway.expect("listening")
        node = _Child("node", [*common, "--state", str(run_dir / "node")], run_dir / "node.log")
        started = node.expect("started")
        scanned = node.expect("scanned")
        if live:
            gateway.send(cmd="target", head=scanned["head"])
        else:
            gateway.send(cmd="start", head=scanned["head"])
        caught = gateway.expect("caught_up")
    finally:
        node_end = node.close() if node else None
        gateway_end = gateway.close()
    if node_end is None or gateway_end is None:
        raise RuntimeError(f"{label}: a process did not stop cleanly; see {run_dir}")
    return {"label": label, "started": started, "scanned": scanned, "caught": caught,
            "node_rss": node_end["rss_mib"], "gateway_rss": gateway_end["rss_mib"]}


def _table(runs: list[dict[str, Any]]) -> bool:
    print(f"\n{'run':<22} {'resources':>9} {'scan s':>7} {'transfer s':>10} {'pull ms':>8} "
          f"{'total s':>8} {'res/s':>7} {'xfer res/s':>10} {'gw RSS':>7} {'node RSS':>8} "
          f"{'rejected':>8}  vs {TARGET_S:.0f} s")
    ok = True
    for r in runs:
        s, c = r["scanned"], r["caught"]
        n = s["resources"]
        scan = s["at"] - r["started"]["at"]
        total = c["at"] - r["started"]["at"]
        transfer = c["at"] - c["registered"]
        pull_ms = sum(p["ms"] for p in c["pulls"])
        live = r["label"].startswith("live")
        good = total < TARGET_S and c["stored"] == n and c["rejected"] == 0
        ok &= good
        print(f"{r['label']:<22} {n:>9} {scan:>7.1f} "
              f"{'(overlap)' if live else f'{transfer:.1f}':>10} {pull_ms:>8.0f} "
              f"{total:>8.1f} {n / total:>7.0f} "
              f"{'' if live else f'{n / transfer:.0f}':>10} "
              f"{r['gateway_rss']:>5.0f}Mi {r['node_rss']:>6.0f}Mi {c['rejected']:>8}  "
              f"{'PASS' if good else 'FAIL'}")
    return ok


def _parent(args: argparse.Namespace) -> int:
    from federation.security.ca import init_ca
    from federation.synth import generate_consortium, load_manifest

    plans = [("validate", True)] if args.validate is True else \
        [("no-validate", False)] if args.validate is False else \
        [("validate", True), ("no-validate", False)]
    with tempfile.TemporaryDirectory(prefix="initial-sync-") as tmp:
        work = Path(tmp)
        consortium = args.workdir or work / "consortium"
        t0 = time.perf_counter()
        if args.workdir and (consortium / "consortium.json").exists() and \
                load_manifest(consortium).people == args.people:
            print(f"reusing the consortium in {consortium}")
        else:
            generate_consortium(consortium, seed=SEED, people=args.people)
            print(f"generated {args.people} people (seed {SEED}) in "
                  f"{time.perf_counter() - t0:.1f} s")
        pki = work / "pki"
        ca = init_ca(pki / "ca", consortium="Bench Consortium")
        ca.issue_gateway(pki / "gateway")
        ca.issue_node(SITE, "city", pki / SITE)

        runs = []
        for name, validate in plans:
            runs.append(_run(name, work, consortium, pki, validate=validate, live=False))
            r = runs[-1]
            print(f"  {name}: {r['scanned']['resources']} resources scanned, "
                  f"pulls {r['caught']['pulls']}", flush=True)
        if args.live:
            runs.append(_run("live-validate", work, consortium, pki, validate=True, live=True))
            r = runs[-1]
            print(f"  live-validate: pulls {r['caught']['pulls']}", flush=True)

    first = runs[0]["scanned"]
    n = first["resources"]
    print(f"\n{SITE}: {n} resources in the node's feed (head {first['head']}, "
          f"{first['quarantined']} quarantined) from {args.people} people; "
          + ", ".join(f"{t} {c}" for t, c in sorted(first["counts"].items(),
                                                     key=lambda kv: -kv[1])))
    if n < MIN_RESOURCES:
        print(f"WARNING: fewer than {MIN_RESOURCES} resources; raise --people")
    ok = _table(runs)
    print(f"\n{os.cpu_count()} cores; scan = node start → feed written; transfer = node "
          "registered → gateway cursor at head; total = node start → caught up")
    return 0 if ok and n >= MIN_RESOURCES else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=7500)
    parser.add_argument("--validate", action=argparse.BooleanOptionalAction, default=None,
                        help="gateway sync_validate; default: run with, then without")
    parser.add_argument("--live", action="store_true",
                        help="also run in deployment order (gateway first, pull overlaps scan)")
    parser.add_argument("--workdir", type=Path, help="generate into / reuse this folder")
    parser.add_argument("--role", choices=("gateway", "node"), help=argparse.SUPPRESS)
    parser.add_argument("--consortium", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gateway-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        asyncio.run(_gateway(args) if args.role == "gateway" else _node(args))
        return 0
    return _parent(args)


if __name__ == "__main__":
    sys.exit(main())
