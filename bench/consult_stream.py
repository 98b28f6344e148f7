"""Study streaming: one large object from the origin node through the gateway to a
specialist's client, against a plain file copy over loopback gRPC without TLS.

    .venv/bin/python bench/consult_stream.py [--mb 500] [--workdir DIR]

Sets up the demo consortium's CA, certificates and data in a temporary folder (or
``--workdir``), starts the gateway and county-a's node as processes (``federation gateway
serve``, ``federation node serve``; logs in ``<workdir>/logs``), writes a ``--mb`` MB
object into county-a's studies folder, records a pathology consult for it in the
gateway's store (with the manifest the node would give: SHA-256 of the object and of every
1 MiB chunk) and has city-1's specialist (person certificate) claim it and stream the
object with ``ConsultClient.fetch_study`` — mutual TLS on both hops, every chunk checked
at the gateway and at the client, the whole SHA-256 at the end, written to disk.

Before each stream the same object is copied by a bare ``grpc.aio`` server on an
insecure port streaming 1 MiB messages to a client in this process that writes them to
disk. ``--rounds`` (default 3) pairs are run and the fastest of each kind counts: on this
VM the first writes into memory the guest has never touched cost 5–7× the CPU of writes
into reused pages, and a 2-core machine shared with other work is noisy.

Printed: MB/s of each, their ratio (aim ≥ 0.5), the CPU seconds per GB of each process
of the stream (robust to the other work on a shared machine) and the gateway's peak
extra resident memory while streaming (VmRSS sampled every 20 ms, minus the RSS before;
aim < 64 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from federation.consult.client import ConsultClient
from federation.consult.state import ConsultState
from federation.consult.studies import CHUNK_SIZE, StudyFolder
from federation.demo.runner import Supervisor, consortium_state
from federation.demo.workspace import prepare_workspace
from federation.security.principal import Principal
from federation.security.tls import TlsMaterial
from federation.store import make_engine
from federation.synth.studies import write_blob_study
from federation.workflow.records import NewTask
from federation.workflow.store import WorkflowStore

STUDY, PATIENT = "bench-slide", "p-bench"


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self.base = _rss_kb(pid)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_kb(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def extra_mb(self) -> float:
        return max(0, self.peak - self.base) / 1024


def _record_consult(workdir: Path, manifest: dict) -> str:
    engine = make_engine(f"sqlite:///{workdir / 'gateway.db'}")
    try:
        now = dt.datetime.now(dt.UTC)
        task = NewTask(task_id=f"con-bench-{int(time.time())}", workflow="consult",
                       category="pathology", state=ConsultState.REQUESTED,
                       requester_site="county-a", requester_user="dr-wang",
                       owner_site="city-1", owner_department="city-1-pathology",
                       patient_id=PATIENT, person_id=None, urgency="routine",
                       attributes={"mode": "offline", "studies": [STUDY]})
        WorkflowStore(engine).create(
            task, {f"Study:{STUDY}": manifest}, [], now=now,
            actor=Principal("person", "dr-wang", "county-a", frozenset({"doctor"})))
        return task.task_id
    finally:
        engine.dispose()


async def _plain_copy(source: Path, target: Path) -> tuple[float, float]:
    """Seconds and CPU seconds of this process to copy ``source`` to ``target`` (then
    removed) through a bare insecure ``grpc.aio`` server in this process."""
    async def read(request: bytes, context: grpc.aio.ServicerContext):
        with source.open("rb") as f:
            while block := f.read(CHUNK_SIZE):
                yield block

    server = grpc.aio.server(options=[("grpc.max_send_message_length", 16 << 20)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Copy", {"Read": grpc.unary_stream_rpc_method_handler(read)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target.parent.mkdir(parents=True, exist_ok=True)
    cpu0, started = _cpu_s(os.getpid()), time.perf_counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_receive_message_length", 16 << 20)]) as channel:
        with target.open("wb") as out:
            async for block in channel.unary_stream("/bench.Copy/Read")(b""):
                out.write(block)
    elapsed, cpu = time.perf_counter() - started, _cpu_s(os.getpid()) - cpu0
    await server.stop(0)
    target.unlink()
    return elapsed, cpu


async def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="consult-bench-"))
    layout = prepare_workspace(workdir, people=40)
    sup = Supervisor(layout)
    try:
        sup.start_gateway()
        sup.start_node("county-a")
        for _ in range(300):
            if any(s.get("site_id") == "county-a" and (s.get("node") or {}).get("state")
                   == "online" for s in consortium_state(layout)):
                break
            await asyncio.sleep(0.2)
        size = args.mb * 1024 * 1024
        print(f"writing a {args.mb} MB object at county-a …", flush=True)
        write_blob_study(workdir / "studies" / "county-a", STUDY, PATIENT, size)
        manifest = StudyFolder(workdir / "studies" / "county-a").describe(STUDY, PATIENT)
        consult_id = _record_consult(workdir, manifest.to_json())
        folder = layout.staff["dr-li"]
        tls = TlsMaterial.load(folder / "dr-li.crt", folder / "dr-li.key", folder / "ca.crt")
        out = workdir / "downloads"
        source = workdir / "studies" / "county-a" / STUDY / "slide.tif"
        mb = size / 1e6
        rows, plains, throughs = [], [], []
        async with ConsultClient(layout.grpc_address, tls, timeout=600) as client:
            await client.act(consult_id, "claim")
            gateway_pid = sup.procs["gateway"].pid
            pids = {"node": sup.procs["county-a"].pid, "gateway": gateway_pid,
                    "client": os.getpid()}
            for n in range(1, args.rounds + 1):
                plains.append(await _plain_copy(source, out / "plain.bin"))
                rows.append(f"| {n} | plain gRPC copy, no TLS | {mb / plains[-1][0]:.1f} | "
                            f"{plains[-1][0]:.2f} | |")
                with Sampler(gateway_pid) as mem:
                    cpu0 = {k: _cpu_s(p) for k, p in pids.items()}
                    started = time.perf_counter()
                    (got,) = await client.fetch_study(consult_id, STUDY, out)
                    took = time.perf_counter() - started
                    cpu = {k: _cpu_s(p) - cpu0[k] for k, p in pids.items()}
                assert got.size == size
                got.path.unlink()
                throughs.append((took, cpu, mem.peak, mem.base))
                rows.append(f"| {n} | node → gateway → specialist (mTLS, SHA-256 checked) | "
                            f"{mb / took:.1f} | {took:.2f} | "
                            f"{(mem.peak - throughs[0][3]) / 1024:.1f} |")
        print("\n| round | path | MB/s | seconds | gateway extra MB |\n|---|---|---:|---:|---:|\n"
              + "\n".join(rows))
        plain, cpu_plain = min(plains)
        through, cpu, _, _ = min(throughs, key=lambda t: t[0])
        base_kb = throughs[0][3]     # peak of any round over the RSS before the first
        extra_mb = max(0, max(t[2] for t in throughs) - base_kb) / 1024
        gb = size / 1e9
        print("\nCPU seconds per GB streamed, fastest round of each (all threads; the load "
              "of other work does not count):\n\n| process | CPU s/GB |\n|---|---:|\n" + "".join(
                  f"| {k} | {v / gb:.2f} |\n" for k, v in cpu.items())
              + f"| all three | {sum(cpu.values()) / gb:.2f} |\n"
              f"| plain copy (server + client, one process) | "
              f"{cpu_plain / gb:.2f} |")
        ratio = plain / through
        print(f"\nthrough the gateway / plain (fastest of each) = {ratio:.2f} (aim ≥ 0.5); "
              f"gateway peak extra memory while streaming {extra_mb:.1f} MB (aim < 64 MB; "
              f"RSS before {base_kb / 1024:.0f} MB)")
        return 0 if ratio >= 0.5 and extra_mb < 64 else 1
    finally:
        sup.stop_all()
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--workdir")
    parser.add_argument("--rounds", type=int, default=3,
                        help="plain copy then stream, this many times (the fastest counts)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
