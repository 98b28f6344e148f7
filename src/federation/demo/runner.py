"""Run the demo consortium: start the processes, show them live, take the tour, stop.

The gateway and each node agent run as separate processes (``python -m federation``),
each in its own session so that Ctrl-C reaches only this supervisor, which then stops
the nodes and the gateway in order. Their logs go to ``<workdir>/logs``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from federation.demo.accounts import ConsoleAccount, seed_console_accounts
from federation.demo.signin import get_json
from federation.demo.tour import run_tour
from federation.demo.workspace import DemoLayout, prepare_workspace
from federation.errors import Unavailable

__all__ = ["run_demo", "Supervisor"]

START_ATTEMPTS = 3
STATE_STYLE = {"online": "green", "unreachable": "red", "offline": "yellow"}


class Supervisor:
    """Starts and stops the demo's processes."""

    def __init__(self, layout: DemoLayout) -> None:
        self.layout = layout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.layout.logs / f"{name}.log").open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "federation", *args], cwd=self.layout.workdir,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        log.close()

    def start_gateway(self, timeout: float = 60.0) -> None:
        self._spawn("gateway", ["gateway", "serve", "--config", str(self.layout.gateway_config)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs["gateway"].poll() is not None:
                raise Unavailable("the gateway exited at start:\n" + self.tail("gateway"))
            try:
                with urllib.request.urlopen(self.layout.http_url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise Unavailable(f"the gateway did not become healthy in {timeout:.0f} s:\n"
                          + self.tail("gateway"))

    def start_nodes(self) -> None:
        for site_id in self.layout.node_configs:
            self.start_node(site_id)

    def start_node(self, site_id: str) -> None:
        self._spawn(site_id, ["node", "serve", "--config",
                              str(self.layout.node_configs[site_id])])

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.layout.logs / f"{name}.log"
        text = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(text[-lines:])

    def stop_all(self, timeout: float = 10.0) -> None:
        order = [n for n in self.procs if n != "gateway"] + (["gateway"] if "gateway" in self.procs else [])
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def consortium_state(layout: DemoLayout) -> list[dict[str, Any]]:
    try:
        return get_json(layout, "/api/consortium", timeout=2)["sites"]  # type: ignore[index]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return []


def state_table(sites: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, expand=False)
    for column in ("site", "tier", "name", "node", "last heartbeat", "registrations"):
        table.add_column(column)
    now = time.time()
    for s in sites:
        node = s.get("node") or {}
        state = node.get("state", "no node")
        beat = node.get("last_heartbeat_at")
        age = ""
        if beat:
            age = f"{now - datetime.fromisoformat(beat).timestamp():.1f} s ago"
        table.add_row(s["site_id"], s["tier"], s["name"],
                      f"[{STATE_STYLE.get(state, 'white')}]{state}[/]", age,
                      str(node.get("registrations", "")))
    return table


def _registrations(sites: list[dict[str, Any]]) -> dict[str, int]:
    return {s["site_id"]: (s.get("node") or {}).get("registrations", 0) for s in sites}


def _wait_online(layout: DemoLayout, sup: Supervisor, live: Live, timeout: float,
                 before: dict[str, int]) -> bool:
    """Wait until every node has registered *in this run* and is online (the store may
    still say "online" for the previous run's processes for a few seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sites = consortium_state(layout)
        live.update(state_table(sites, "Consortium — starting"))
        now = _registrations(sites)
        if sites and all((s.get("node") or {}).get("state") == "online"
                         and now[s["site_id"]] > before.get(s["site_id"], 0) for s in sites):
            return True
        for name, proc in sup.procs.items():
            if proc.poll() is not None:
                raise Unavailable(f"{name} exited at start:\n" + sup.tail(name))
        time.sleep(0.3)
    return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(workdir: Path, *, tour_only: bool, people: int) -> int:
    # the children run in their own sessions; SIGTERM must stop them like Ctrl-C does
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console()
    console.print(f"[bold]Demo consortium[/] in {workdir}")
    sup = None
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            layout = prepare_workspace(workdir, people=people)   # fresh ports each attempt
            sup = Supervisor(layout)
            try:
                sup.start_gateway()
                break
            except Unavailable as exc:
                sup.stop_all()
                if "address already in use" not in str(exc).lower() or attempt == START_ATTEMPTS:
                    raise
                console.print("[yellow]a chosen port was taken meanwhile; trying other ports[/]")
        console.print(f"gateway gRPC {layout.grpc_address}, HTTP {layout.http_url} "
                      f"(try {layout.http_url}/api/consortium)")
        before = _registrations(consortium_state(layout))
        sup.start_nodes()
        with Live(state_table([], "Consortium — starting"), console=console,
                  refresh_per_second=4, transient=False) as live:
            if not _wait_online(layout, sup, live, timeout=60, before=before):
                console.print("[red]not every node came online within 60 s; see "
                              f"{layout.logs}[/]")
                return 1
            live.update(state_table(consortium_state(layout), "Consortium — all online"))
        console.print()
        accounts = seed_console_accounts(layout)
        ok = asyncio.run(run_tour(layout, console))
        if tour_only:
            return 0 if ok else 1
        console.print(console_table(layout, accounts))
        console.print("\n[bold]Running.[/] Live state below; Ctrl-C stops everything.")
        with Live(console=console, refresh_per_second=2) as live:
            while True:
                live.update(state_table(consortium_state(layout), "Consortium — live"))
                time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("\nstopping…")
        return 0
    finally:
        if sup is not None:
            sup.stop_all()
        console.print("all processes stopped")


def console_table(layout: DemoLayout, accounts: tuple[ConsoleAccount, ...]) -> Table:
    """The web console's address and the demo's accounts, to sign in with."""
    table = Table(title=f"Web console: {layout.http_url}/console  (中文; English: ?lang=en)")
    table.add_column("who")
    table.add_column("institution (机构)")
    for column in ("user", "password"):      # never cut short: they are typed in
        table.add_column(column, no_wrap=True,
                         min_width=max(len(getattr(a, column)) for a in accounts))
    for a in accounts:
        table.add_row(a.what, a.signin_site, a.user, a.password)
    return table

