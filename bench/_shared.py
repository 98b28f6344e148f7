"""What the gateway benchmarks that run real processes share.

Imported by the scripts in this folder as ``import _shared`` (a script's own folder is
on ``sys.path``). Importing it puts this checkout's ``src`` and root first on the path
of this process *and of every process it starts* (``PYTHONPATH``), so the gateways and
node agents a benchmark spawns run the same code as the benchmark, whichever
environment's Python runs it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing as mp
import os
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "src")):
    if _p not in sys.path:
        sys.path.insert(0, _p)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])

from sqlalchemy import text  # noqa: E402 (after the path is set)

from federation.demo.workspace import free_ports  # noqa: E402
from federation.store import make_engine  # noqa: E402
from tests.deploy.gateways import caught_up  # noqa: E402
from tests.pg_util import throwaway_database  # noqa: E402

__all__ = ["ROOT", "free_ports", "throwaway_database", "percentile", "machine",
           "inbox_received", "caught_up", "linked_patients", "gateway_process"]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 ≤ q ≤ 1) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def gateway_process(url: str, root: str, ready: mp.Queue) -> None:
    """A spawned process's target: one gateway on ``url`` with the throwaway PKI under
    ``root`` (``ca/``, ``gateway/``), ports chosen by the system and put on ``ready`` as
    ``(grpc_port, http_port)``; rate and sign-in limits lifted, to measure the server
    and not the limits; the archive's schedule off."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from federation._runtime import settle_heap
    from federation.gateway.app import start_gateway
    from federation.settings import GatewaySettings, TlsSettings

    r = Path(root)

    async def serve() -> None:
        gw = await start_gateway(GatewaySettings(
            grpc_rate_per_node=1e6, http_rate_per_user=1e6, signin_rate_per_minute=1e6,
            database_url=url, grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
            tls=TlsSettings(r / "gateway/gateway.crt", r / "gateway/gateway.key",
                            r / "ca/ca.crt", r / "ca/crl.pem"),
            sync_interval_ms=3_600_000))
        settle_heap()                                 # as `federation gateway serve` does
        ready.put((gw.grpc_port, gw.http_port))
        await asyncio.Event().wait()

    asyncio.run(serve())


def machine() -> str:
    """Cores and load average now: benchmarks here share a small, busy machine, and a
    figure means little without them."""
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.1f} / {five:.1f} / {fifteen:.1f}"


def inbox_received(path: Path, which: str = "referral") -> dict[str, list[float]]:
    """Referral id → the times (epoch s) a node's inbox (``<state_dir>/inbox.sqlite``,
    read while the node runs) stored its ``which`` bundle (``referral`` or ``packet``);
    two times for one id is a duplicate. The ids are read inside SQLite, so polling
    does not parse every stored packet in Python."""
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT json_extract(CAST(payload AS TEXT), '$.id'), received_at "
                            "FROM inbox WHERE kind = 'referral'").fetchall()
    except sqlite3.OperationalError:   # the node has not created its inbox yet
        return {}
    finally:
        conn.close()
    out: dict[str, list[float]] = {}
    for bundle_id, received in rows:
        rid, _, kind = str(bundle_id).rpartition("-")
        if kind != which:
            continue
        at = dt.datetime.fromisoformat(str(received))
        at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
        out.setdefault(rid, []).append(at.timestamp())
    return out


def linked_patients(url: str, site: str) -> list[str]:
    """``site``'s patient ids the EMPI has linked (referrals need a linked patient)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT record_id FROM identity_record WHERE site_id = :s AND "
                "state = 'linked' ORDER BY record_id"), {"s": site}).scalars())
    except Exception:  # not migrated yet
        return []
    finally:
        engine.dispose()
