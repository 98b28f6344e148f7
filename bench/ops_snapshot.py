#!/usr/bin/env python3
"""What one /metrics scrape costs the store at province scale (``operations_snapshot``).

Fills a throwaway PostgreSQL database with ``--sites`` member sites (each with a node
and a feed cursor), ``--work-items`` work items of which ``--pending`` are not yet
acknowledged, and ``--reviews`` open EMPI review items (rows written with
``generate_series``, not through the store: this measures the read), then times
``operations_snapshot`` — the read each replica runs on every scrape — as the schema is,
and again after adding a partial index on the unacknowledged work items
(``CREATE INDEX … ON work_item (site_id) WHERE acked_at IS NULL``, not in the migrations).

    python bench/ops_snapshot.py                      # 3,000 sites, 2 M work items
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3000)
    parser.add_argument("--work-items", type=int, default=2_000_000)
    parser.add_argument("--pending", type=int, default=20_000)
    parser.add_argument("--reviews", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    from sqlalchemy import text

    from federation.store import make_engine, upgrade
    from federation.store.ops_view import operations_snapshot
    from tests.pg_util import throwaway_database

    with throwaway_database(prefix="fed_ops") as url:
        upgrade(url)
        engine = make_engine(url)
        t0 = time.perf_counter()
        with engine.begin() as c:
            c.execute(text(
                "INSERT INTO site (site_id, name, tier, created_at) SELECT 's' || g, 'site ' || g, "
                "'township', now() FROM generate_series(1, :n) g"), {"n": args.sites})
            c.execute(text(
                "INSERT INTO node (site_id, endpoint, state, cert_serial, cert_fingerprint, "
                "software_version, capabilities, registered_at, last_heartbeat_at, "
                "state_changed_at, registrations, heartbeat_seq) SELECT 's' || g, 'h:1', "
                "CASE WHEN g % 20 = 0 THEN 'unreachable' ELSE 'online' END, '0', '0', 'b', '[]', "
                "now(), now(), now(), 1, 1 FROM generate_series(1, :n) g"), {"n": args.sites})
            c.execute(text(
                "INSERT INTO feed_cursor (site_id, epoch, after, node_head, pulls, rejected, "
                "last_pull_at, caught_up_at) SELECT 's' || g, 'e', 100, 100 + g % 7, 1, 0, "
                "now(), now() FROM generate_series(1, :n) g"), {"n": args.sites})
            c.execute(text(
                "INSERT INTO work_item (item_id, site_id, kind, created_at, content_type, "
                "payload, acked_at, attempts) SELECT 'w' || g, 's' || (1 + g % :s), 'referral', "
                "now() - interval '1 second' * g, 'application/fhir+json', '\\x7b7d'::bytea, "
                "CASE WHEN g <= :p THEN NULL ELSE now() END, 1 "
                "FROM generate_series(1, :n) g"),
                {"s": args.sites, "p": args.pending, "n": args.work_items})
            c.execute(text(
                "INSERT INTO identity_review (site_id, record_id, candidate_person_id, "
                "candidate_site_id, candidate_record_id, weight, reason, detail, status, "
                "created_at) SELECT 's1', 'r' || g, 'p', 's2', 'q', 3.0, 'between', '{}', 'open', "
                "now() FROM generate_series(1, :n) g"), {"n": args.reviews})
            c.execute(text("ANALYZE"))
        print(f"loaded in {time.perf_counter() - t0:.0f} s: {args.sites} sites, "
              f"{args.work_items} work items ({args.pending} pending), {args.reviews} open reviews")
        for label in ("schema as migrated", "with a partial index on pending items"):
            if label.startswith("with"):
                with engine.begin() as c:
                    c.execute(text("CREATE INDEX bench_pending ON work_item (site_id) "
                                   "WHERE acked_at IS NULL"))
                    c.execute(text("ANALYZE work_item"))
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                snap = operations_snapshot(engine)
                times.append((time.perf_counter() - t) * 1000)
            assert sum(s.inbox_pending for s in snap.sites) == args.pending
            print(f"operations_snapshot, {label}: median {statistics.median(times):.0f} ms, "
                  f"max {max(times):.0f} ms over {args.runs} runs")
        engine.dispose()


if __name__ == "__main__":
    main()
