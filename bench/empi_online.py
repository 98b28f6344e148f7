"""Online EMPI link latency with a large index already loaded (SQLite and PostgreSQL).

    python bench/empi_online.py --persons 1000000 --probes 1000 --backend both

1. N synthetic people (``synth.people``) are loaded straight into the identity tables —
   one record, one person and its blocking keys each (bulk inserts; COPY on PostgreSQL);
2. ``--probes`` arrivals are linked one by one through ``IdentityStore.link`` — each its
   own transaction, as the archive does: half are another site's noisy record of a loaded
   person (``synth.noise``), half are new people;
3. prints p50 / p90 / p99 / max latency per backend and whether each probe was linked to
   the right person (``correct``; of the others, ``not_linked``: a copy of a loaded
   person sent to review or made a new person, ``linked_wrongly``: linked to someone
   it is not).

Loading a million people takes minutes, and latency should be measured on a quiet
machine: ``--sqlite-path FILE`` and ``--postgres-url URL`` keep the loaded index (a
database that already holds ``--persons`` people is not loaded again), so the probes can
be re-run alone later. Without them each run uses a throwaway database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from federation.identity.blocking import hashed_keys
from federation.identity.features import extract
from federation.identity.index import RecordRef, _digest
from federation.identity.store import IdentityStore
from federation.store import GatewayStore, make_engine, upgrade
from federation.synth.noise import NoiseLog, NoiseRates, apply_noise
from federation.synth.people import make_population

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.pg_util import throwaway_database  # noqa: E402

SITES = (("city-1", "city"), ("county-a", "county"), ("township-a1", "township"))


def _fields(app) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {"name": app.name, "sex": app.sex, "birth_date": app.birth_date.isoformat(),
            "national_id": app.resident_id, "phone": app.phone, "address": app.address}


def _rows(people, seed: int):  # type: ignore[no-untyped-def]
    """(persons, records, blocks) to load, built once for every backend of the run: the
    feature extraction is the slow part (~1 ms a record)."""
    rng, log = random.Random(f"{seed}:load"), NoiseLog()
    now = dt.datetime.now(dt.UTC)
    persons, records, blocks = [], [], []
    for n, p in enumerate(people):
        app = apply_noise(rng, p, "county-a", "county", NoiseRates(), log)
        f = extract({**_fields(app), "site": "county-a", "record_id": p.person_id})
        pid = f"P{n:09d}"
        persons.append((pid, now))
        records.append(("county-a", p.person_id, None, pid, "linked", False,
                        json.dumps(f.as_json(), ensure_ascii=False), _digest(f), now))
        blocks.extend((k, "county-a", p.person_id) for k in dict.fromkeys(hashed_keys(f)))
    # in primary-key order: the B-tree grows at its right edge instead of splitting pages
    # all over a 20-million-row index (an hour on SQLite unsorted, minutes sorted)
    blocks.sort()
    records.sort(key=lambda r: (r[0], r[1]))
    return persons, records, blocks


def load(url: str, rows) -> float:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    upgrade(engine)
    store = GatewayStore(engine)
    for site, tier in SITES:
        store.upsert_site(site, site, tier)
    started = time.perf_counter()
    persons, records, blocks = rows
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cur.copy("COPY identity_person (person_id, created_at) FROM STDIN") as cp:
                for row in persons:
                    cp.write_row(row)
            with cur.copy("COPY identity_record (site_id, record_id, local_id, person_id, "
                          "state, pinned, features, digest, updated_at) FROM STDIN") as cp:
                for row in records:
                    cp.write_row(row)
            with cur.copy("COPY identity_block (key, site_id, record_id) FROM STDIN") as cp:
                for row in blocks:
                    cp.write_row(row)
            cur.execute("ANALYZE")
        else:
            cur.execute("PRAGMA cache_size = -1000000")      # 1 GB page cache for the load
            cur.executemany("INSERT INTO identity_person (person_id, created_at) VALUES (?, ?)",
                            [(a, b.isoformat(sep=" ")) for a, b in persons])
            cur.executemany("INSERT INTO identity_record VALUES (?,?,?,?,?,?,?,?,?)",
                            [(*r[:8], r[8].isoformat(sep=" ")) for r in records])
            cur.executemany("INSERT INTO identity_block VALUES (?,?,?)", blocks)
            cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
        engine.dispose()
    return time.perf_counter() - started


def _loaded(url: str) -> int:
    from sqlalchemy import inspect, text
    engine = make_engine(url)
    try:
        if "identity_person" not in inspect(engine).get_table_names():
            return 0
        with engine.connect() as c:
            return int(c.execute(text("SELECT count(*) FROM identity_person")).scalar_one())
    finally:
        engine.dispose()


def _load_once(url: str, people, seed: int, built: dict) -> float | None:  # type: ignore[no-untyped-def]
    have = _loaded(url)
    if have >= len(people):     # earlier runs' probes may have added new people
        print(f"{url.split('@')[-1]}: {len(people):,} people already loaded"
              + (f" (+{have - len(people):,} from earlier runs' probes)"
                 if have > len(people) else ""), flush=True)
        return None
    if have:
        raise SystemExit(f"{url} holds {have:,} people, not {len(people):,}; use another")
    if "rows" not in built:
        t = time.perf_counter()
        built["rows"] = _rows(people, seed)
        print(f"built {len(people):,} records and {len(built['rows'][2]):,} blocking keys "
              f"in {time.perf_counter() - t:.0f} s", flush=True)
    return load(url, built["rows"])


def probe(url: str, people, probes: int, seed: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    store = IdentityStore(engine)
    # each run's probes are new arrivals, even in an index kept from an earlier run
    run = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    rng, log = random.Random(f"{seed}:probe:{run}"), NoiseLog()
    fresh = make_population(random.Random(f"{seed}:fresh:{run}"), probes)
    latencies, right, missed, wrong = [], 0, 0, 0
    examples: list[dict[str, object]] = []       # synthetic people: shown to explain errors
    for n in range(probes):
        if n % 2 == 0:
            p = people[rng.randrange(len(people))]
            expect = store.person_of(RecordRef("county-a", p.person_id))
        else:
            p, expect = fresh.people[n // 2], None
        app = apply_noise(rng, p, "city-1", "city", NoiseRates(), log)
        t = time.perf_counter()
        out = store.link("city-1", f"probe-{run}-{n}", _fields(app))
        latencies.append((time.perf_counter() - t) * 1000)
        ok = (out.person_id == expect) if expect else (out.outcome in ("new", "review"))
        right += ok
        if not ok and expect and out.outcome in ("new", "review"):
            missed += 1                  # a copy of a loaded person, not linked to them
        elif not ok:
            wrong += 1                   # linked to someone it is not
            linked = store.person(out.person_id) if out.person_id else None
            examples.append({"probe": _fields(app), "truth": _fields(p) if expect else "new",
                             "weight": out.weight, "linked_to": linked and linked.golden})
    engine.dispose()
    q = statistics.quantiles(latencies, n=100)
    return {"probes": probes, "p50_ms": round(q[49], 2), "p90_ms": round(q[89], 2),
            "p99_ms": round(q[98], 2), "max_ms": round(max(latencies), 2),
            "correct": right, "not_linked": missed, "linked_wrongly": wrong,
            "wrong_examples": examples[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sqlite-path", type=Path, help="keep the SQLite index in this file")
    ap.add_argument("--postgres-url", help="keep the PostgreSQL index in this database")
    ap.add_argument("--load-only", action="store_true", help="load, do not probe")
    args = ap.parse_args()
    t = time.perf_counter()
    people = make_population(random.Random(f"{args.seed}:people"), args.persons).people
    print(f"generated {len(people):,} people in {time.perf_counter() - t:.0f} s", flush=True)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    built: dict[str, object] = {}
    for backend in backends:
        if backend == "sqlite":
            path = args.sqlite_path or Path(tempfile.mkdtemp(prefix="empi-online-")) / "gw.db"
            result = _run(f"sqlite:///{path}", people, args, built)
        elif args.postgres_url:
            result = _run(args.postgres_url, people, args, built)
        else:
            with throwaway_database() as url:
                result = _run(url, people, args, built)
        print(json.dumps({"backend": backend, "persons": len(people), **result}), flush=True)


def _run(url: str, people, args: argparse.Namespace, built: dict) -> dict[str, object]:  # type: ignore[no-untyped-def]
    loaded = _load_once(url, people, args.seed, built)
    out: dict[str, object] = {"load_s": None if loaded is None else round(loaded, 1)}
    if not args.load_only:
        out.update(probe(url, people, args.probes, args.seed))
    return out

if __name__ == "__main__":
    main()
