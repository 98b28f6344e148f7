#!/usr/bin/env python3
"""Where a benchmark's time goes on PostgreSQL and on the cores, sampled from outside.

    python bench/pg_profile.py --url postgresql+psycopg://postgres@127.0.0.1:5432/fed_x \\
        --seconds 20 --pids gateway-1=1234,gateway-2=1235 --out profile.json

Run beside a load (``referral_replicas.py --profile`` starts it for its measured window).
Every ``--interval`` (100 ms) it reads ``pg_stat_activity`` for the benchmark's database
and counts each backend's (state, wait_event_type:wait_event, statement) into a
histogram, and every backend that waits on a lock together with the backend that blocks
it (``pg_blocking_pids``) and what each runs. Over the whole window it takes deltas of:
CPU seconds (``/proc/<pid>/stat``) of each named process, of that database's backends and
of every PostgreSQL process; the machine's busy and idle cores (``/proc/stat``);
``pg_stat_database`` (commits, rollbacks, rows) and, when the server preloads
``pg_stat_statements``, per-statement calls and execution time. It prints one JSON
object (and writes it to ``--out``). Sampling from a separate process keeps its own
cost off the load driver's interpreter.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

_TICK = os.sysconf("SC_CLK_TCK")
_SPACES = re.compile(r"\s+")
_LITERALS = re.compile(r"\$\d+|'[^']*'|\b\d+\b")


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == ppid:
                out.append(int(entry.name))
    return out


def _machine() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, every core together."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICK, idle / _TICK


def _shape(query: str | None) -> str:
    """A statement without its literals, shortened: the histogram's key."""
    return _LITERALS.sub("?", _SPACES.sub(" ", query or "")).strip()[:110]


_ACTIVITY = text(
    "SELECT pid, state, wait_event_type, wait_event, query, "
    "cardinality(pg_blocking_pids(pid)) AS blocked "
    "FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()")
_BLOCKERS = text(
    "SELECT w.pid, w.query AS waiting, b.pid AS bpid, b.state AS bstate, b.query AS blocker "
    "FROM pg_stat_activity w, unnest(pg_blocking_pids(w.pid)) AS bp(pid) "
    "JOIN pg_stat_activity b ON b.pid = bp.pid WHERE w.datname = :db")
_DB = text("SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, "
           "tup_updated, tup_deleted, blks_read, blks_hit, deadlocks "
           "FROM pg_stat_database WHERE datname = :db")
_STATEMENTS = text(
    "SELECT s.query, s.calls, s.total_exec_time, s.rows FROM pg_stat_statements s "
    "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = :db")


def _statements(conn, db: str) -> dict[str, tuple[int, float, int]] | None:
    try:
        rows = conn.execute(_STATEMENTS, {"db": db}).all()
    except Exception:  # not preloaded, or the extension is absent: reported as None
        conn.rollback()
        return None
    out: dict[str, tuple[int, float, int]] = {}
    for q, calls, ms, n in rows:
        c0, m0, n0 = out.get(_shape(q), (0, 0.0, 0))
        out[_shape(q)] = (c0 + calls, m0 + ms, n0 + n)
    return out


def _postmaster(conn) -> int | None:
    try:
        data = conn.execute(text("SHOW data_directory")).scalar_one()
        return int(Path(data, "postmaster.pid").read_text().split()[0])
    except Exception:  # another machine, or no right to read it: PostgreSQL CPU omitted
        conn.rollback()
        return None


def profile(url: str, seconds: float, pids: dict[str, int], interval: float = 0.1) -> dict:
    db = make_url(url).database
    admin = make_url(url).set(database="postgres")
    engine = create_engine(admin, pool_size=1, connect_args={"application_name": "pg_profile"})
    states: collections.Counter[str] = collections.Counter()
    waits: collections.Counter[str] = collections.Counter()
    chains: collections.Counter[str] = collections.Counter()
    samples = blocked_samples = 0
    with engine.connect() as conn:
        conn.execute(text("SET statement_timeout = '2s'"))
        postmaster = _postmaster(conn)
        pg_pids = _children(postmaster) if postmaster else []
        db_pids = [r.pid for r in conn.execute(_ACTIVITY, {"db": db})]
        before = {"procs": {n: _cpu(p) for n, p in pids.items()},
                  "db_backends": {p: _cpu(p) for p in db_pids},
                  "postgres": sum(_cpu(p) for p in pg_pids) + (_cpu(postmaster) if postmaster else 0),
                  "machine": _machine(),
                  "stats": conn.execute(_DB, {"db": db}).one()._asdict(),
                  "statements": _statements(conn, db)}
        conn.commit()
        t0 = time.monotonic()
        while (now := time.monotonic()) - t0 < seconds:
            rows = conn.execute(_ACTIVITY, {"db": db}).all()
            samples += 1
            any_blocked = False
            for r in rows:
                if r.state == "idle":
                    states["idle"] += 1
                    continue
                wait = f"{r.wait_event_type}:{r.wait_event}" if r.wait_event_type else "CPU/running"
                states[f"{r.state} | {wait}"] += 1
                waits[f"{r.state} | {wait} | {_shape(r.query)}"] += 1
                any_blocked |= bool(r.blocked)
            if any_blocked:
                blocked_samples += 1
                for r in conn.execute(_BLOCKERS, {"db": db}):
                    chains[f"WAITS: {_shape(r.waiting)}  <- HELD BY ({r.bstate}): "
                           f"{_shape(r.blocker)}"] += 1
            conn.commit()
            time.sleep(max(0.0, interval - (time.monotonic() - now)))
        elapsed = time.monotonic() - t0
        pg_pids = set(pg_pids) | set(_children(postmaster) if postmaster else [])
        after_stats = conn.execute(_DB, {"db": db}).one()._asdict()
        after_statements = _statements(conn, db)
        db_cpu = sum(_cpu(p) - c for p, c in before["db_backends"].items())
        new = [r.pid for r in conn.execute(_ACTIVITY, {"db": db}) if r.pid not in before["db_backends"]]
        db_cpu += sum(_cpu(p) for p in new)   # backends opened during the window
        pg_cpu = sum(_cpu(p) for p in pg_pids) + (_cpu(postmaster) if postmaster else 0)
    engine.dispose()
    busy, idle = _machine()
    result = {
        "seconds": round(elapsed, 1), "samples": samples,
        "cpu_s": {n: round(_cpu(p) - before["procs"][n], 2) for n, p in pids.items()}
                 | {"postgres_backends_of_db": round(db_cpu, 2),
                    "postgres_all (children that lived to the end)":
                        round(pg_cpu - before["postgres"], 2) if postmaster else None,
                    "machine_busy": round(busy - before["machine"][0], 1),
                    "machine_idle": round(idle - before["machine"][1], 1)},
        "pg_stat_database": {k: after_stats[k] - before["stats"][k] for k in after_stats},
        "backend_states_per_sample": {k: round(v / samples, 2) for k, v in states.most_common()},
        "waits_per_sample (top 25)": {k: round(v / samples, 3) for k, v in waits.most_common(25)},
        "samples_with_a_lock_wait": blocked_samples,
        "lock_chains (samples, top 10)": dict(chains.most_common(10)),
    }
    if before["statements"] is not None and after_statements is not None:
        delta = []
        for q, (c, ms, n) in after_statements.items():
            c0, ms0, n0 = before["statements"].get(q, (0, 0.0, 0))
            if c > c0:
                delta.append((ms - ms0, c - c0, n - n0, q))
        delta.sort(reverse=True)
        result["statements (calls, exec ms, rows; top 30 by time)"] = [
            [c, round(ms), n, q] for ms, c, n, q in delta[:30]]
        result["statements_total"] = {"calls": sum(d[1] for d in delta),
                                      "exec_ms": round(sum(d[0] for d in delta))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the benchmark's database")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--pids", default="", help="name=pid,… whose CPU to count")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pids = {n: int(p) for n, p in (x.split("=") for x in args.pids.split(",") if x)}
    result = profile(args.url, args.seconds, pids, args.interval)
    text_ = json.dumps(result, indent=1, ensure_ascii=False)
    if args.out:
        args.out.write_text(text_)
    print(text_)


if __name__ == "__main__":
    main()
