"""Several ``federation gateway serve`` processes on one database, for tests and benchmarks.

Each replica gets its own config (the demo workspace's gateway config with its own
ports and the given database) and its own log in the workspace's ``logs`` folder; they
share the database and the privacy key ring (the first one started creates it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from sqlalchemy import text

from federation.demo.workspace import DemoLayout, free_ports
from federation.store import make_engine

__all__ = ["Gateways", "caught_up", "healthy", "until"]


class Gateways:
    """``federation gateway serve`` processes sharing one database and one key ring."""

    def __init__(self, layout: DemoLayout, url: str, count: int) -> None:
        self.layout, self.url = layout, url
        ports = free_ports(2 * count)
        self.grpc = ports[:count]
        self.http = ports[count:]
        self.procs: list[subprocess.Popen | None] = [None] * count
        base = layout.gateway_config.read_text()
        self.configs = []
        for i in range(count):
            lines = [line for line in base.splitlines()
                     if not line.startswith(("database_url", "grpc_listen", "http_listen"))]
            head = [f'database_url = "{url}"', f'grpc_listen = "127.0.0.1:{self.grpc[i]}"',
                    f'http_listen = "127.0.0.1:{self.http[i]}"',
                    'privacy_keyring = "privacy-keys.json"', "inbox_poll_ms = 200"]
            config = layout.workdir / f"gateway-{i + 1}.toml"
            config.write_text("\n".join(head + lines[1:]) + "\n")
            self.configs.append(config)

    @property
    def addresses(self) -> str:
        """Every replica's gRPC address, comma-separated (what a node's ``gateway`` takes)."""
        return ",".join(self.address(i) for i in range(len(self.grpc)))

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.grpc[i]}"

    async def start(self, i: int) -> None:
        log = (self.layout.logs / f"gateway-{i + 1}.log").open("wb")
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "federation", "gateway", "serve", "--config",
             str(self.configs[i])], stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        await until(lambda: healthy(self.http[i]), 60, f"gateway {i + 1} to serve")

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None and proc.poll() is None, f"gateway {i + 1} is not running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def healthy(port: int) -> bool:
    """The gateway on HTTP ``port`` answers ``/healthz``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


def caught_up(url: str, sites: tuple[str, ...]) -> bool:
    """The archive has read these sites' change feeds to their heads: the start-up's
    heavy work (first scans, pulls, EMPI linking) is over."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = {r.site_id: r for r in conn.execute(text(
                "SELECT site_id, after, node_head, caught_up_at FROM feed_cursor"))}
    except Exception:  # not migrated yet
        return False
    finally:
        engine.dispose()
    return all(s in rows and rows[s].caught_up_at is not None and rows[s].node_head > 0
               and rows[s].after == rows[s].node_head for s in sites)
