#!/usr/bin/env python3
"""Server time of the web console's busiest pages with a consortium of 100k persons.

    python bench/console_pages.py                       # 100,000 persons, 16 users
    python bench/console_pages.py --db /tmp/console100k.db --requests 800

1. A gateway store (SQLite; ``--db FILE`` keeps it for later runs) is loaded with
   ``--persons`` synthetic people (``synth.people``): each has a record at a county or
   township site and one in three also at the city hospital, linked to one EMPI person
   (identity tables loaded in bulk, as ``bench/empi_online.py`` does), and each record
   has a regional archive of a Patient, 3 encounters (the latest within the care window,
   so the site's doctor has a care relationship), 2 conditions, 4 lab results (two LOINC
   codes, so the page draws trends), a medication and a document: about 12 resources a
   record, 1.6 million rows at 100k persons.
2. One gateway process (``gateway serve``-equivalent, no nodes: every site reads as not
   connected, which the overview shows) serves it on loopback.
3. ``--users`` concurrent people — a county doctor opening random patients' record pages
   (``/console/patients/{person}``) and a regional administrator opening the overview
   (``/console/admin``), alternately — sign in through the sign-in form and send
   ``--requests`` page loads in all. Reported per page: p50/p99 of the server's own time
   (``Server-Timing: app;dur=…``, the whole request inside the app, API calls included)
   and of the time the client saw. ``--think-ms`` gives each user a pause between
   pages (a person reads a page before opening the next); 0, the default, sends them
   back to back, the harshest load.

The aim (issue 9): p99 ≤ 300 ms for both pages. On a 2-core machine the load driver and
the gateway share the cores; the client's figure includes that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _shared import gateway_process, percentile  # sets the path first

SITES = (("city-1", "市第一人民医院", "city", None),
         ("county-a", "东阳县人民医院", "county", "city-1"),
         ("county-b", "西河县人民医院", "county", "city-1"),
         ("township-a1", "东阳县石门镇卫生院", "township", "county-a"),
         ("township-a2", "东阳县白沙乡卫生院", "township", "county-a"),
         ("township-b1", "西河县柳林镇卫生院", "township", "county-b"))
HOME_SITES = ("county-a", "county-b", "township-a1", "township-a2", "township-b1")
PASSWORD = "bench console password"
DOCTOR, ADMIN = ("bench-doctor", "county-a"), ("bench-admin", None)


def _resources(site: str, rid: str, n: int, rng: random.Random, now: dt.datetime,
               patient: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    subject = {"reference": f"Patient/{rid}"}
    out: list[tuple[str, str, dict[str, Any]]] = [("Patient", rid, patient)]
    for k in range(3):
        when = now - dt.timedelta(days=[5, 120, 400][k] + rng.randint(0, 20))
        out.append(("Encounter", f"{rid}-e{k}", {
            "resourceType": "Encounter", "id": f"{rid}-e{k}", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB", "display": "门诊"},
            "subject": subject, "period": {"start": when.isoformat(),
                                           "end": (when + dt.timedelta(hours=1)).isoformat()}}))
    for k, (code, text) in enumerate((("I10", "原发性高血压"), ("E11.9", "2型糖尿病"))):
        out.append(("Condition", f"{rid}-c{k}", {
            "resourceType": "Condition", "id": f"{rid}-c{k}", "subject": subject,
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code,
                                 "display": text}], "text": text},
            "recordedDate": (now - dt.timedelta(days=300)).date().isoformat()}))
    for k in range(4):
        code, unit, lo, hi = (("4548-4", "%", 5.5, 9.5), ("2345-7", "mmol/L", 4.0, 12.0))[k % 2]
        when = now - dt.timedelta(days=30 * (k // 2) + rng.randint(0, 10))
        out.append(("Observation", f"{rid}-o{k}", {
            "resourceType": "Observation", "id": f"{rid}-o{k}", "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": subject, "effectiveDateTime": when.isoformat(),
            "valueQuantity": {"value": round(rng.uniform(lo, hi), 1), "unit": unit}}))
    out.append(("MedicationRequest", f"{rid}-m0", {
        "resourceType": "MedicationRequest", "id": f"{rid}-m0", "status": "active",
        "intent": "order", "subject": subject,
        "medicationCodeableConcept": {"text": "二甲双胍片 0.5g"},
        "authoredOn": (now - dt.timedelta(days=60)).date().isoformat()}))
    out.append(("DocumentReference", f"{rid}-d0", {
        "resourceType": "DocumentReference", "id": f"{rid}-d0", "status": "current",
        "subject": subject, "date": (now - dt.timedelta(days=5)).isoformat(),
        "type": {"text": "门诊病历"},
        "content": [{"attachment": {"contentType": "text/plain", "title": "门诊病历"}}]}))
    return out


def build(url: str, persons: int, seed: int) -> list[str]:
    """Load the store; the EMPI person ids of everyone (for the page loads)."""
    from sqlalchemy import text

    from federation.archive.store import ArchiveStore, StoredChange, _stored_keys
    from federation.identity.blocking import hashed_keys
    from federation.identity.features import extract
    from federation.identity.index import _digest
    from federation.security.accounts import hash_password
    from federation.store import GatewayStore, make_engine, upgrade
    from federation.synth.people import make_population

    engine = make_engine(url)
    upgrade(engine)
    store = GatewayStore(engine)
    with engine.connect() as c:
        have = int(c.execute(text("SELECT count(*) FROM identity_person")).scalar_one())
    if have:
        print(f"store already holds {have:,} persons; reusing it", flush=True)
        with engine.connect() as c:
            ids = [r[0] for r in c.execute(text("SELECT person_id FROM identity_person"))]
        engine.dispose()
        return ids
    now = dt.datetime.now(dt.UTC)
    for site_id, name, tier, parent in SITES:
        store.upsert_site(site_id, name, tier, parent)
    store.put_account(DOCTOR[0], ["doctor"], hash_password(PASSWORD), now, site_id=DOCTOR[1])
    store.put_account(ADMIN[0], ["regional-admin"], hash_password(PASSWORD), now)
    rng = random.Random(seed)
    started = time.perf_counter()
    people = make_population(random.Random(f"{seed}:people"), persons).people[:persons]
    person_rows, record_rows, block_rows, resources = [], [], [], {s[0]: [] for s in SITES}
    ids: list[str] = []
    for n, p in enumerate(people):
        pid = f"P{n:09d}"
        ids.append(pid)
        person_rows.append((pid, now.isoformat(sep=" ")))
        sites = [HOME_SITES[n % len(HOME_SITES)]] + (["city-1"] if n % 3 == 0 else [])
        for site in sites:
            rid = f"{site[:2]}{n:07d}"
            fields = {"name": p.name, "sex": p.sex, "birth_date": p.birth_date.isoformat(),
                      "national_id": p.resident_id, "phone": p.phone, "address": p.address,
                      "site": site, "record_id": rid}
            f = extract(fields)
            record_rows.append((site, rid, None, pid, "linked", False,
                                json.dumps(f.as_json(), ensure_ascii=False), _digest(f),
                                now.isoformat(sep=" ")))
            block_rows.extend((k, site, rid) for k in dict.fromkeys(hashed_keys(f)))
            patient = {"resourceType": "Patient", "id": rid, "gender": p.sex,
                       "birthDate": p.birth_date.isoformat(),
                       "name": [{"text": p.name}]}
            resources[site].extend(_resources(site, rid, n, rng, now, patient))
    block_rows.sort()
    record_rows.sort(key=lambda r: (r[0], r[1]))
    print(f"built {persons:,} persons, {len(record_rows):,} records, "
          f"{sum(map(len, resources.values())):,} archive resources in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA cache_size = -1000000")
        cur.executemany("INSERT INTO identity_person (person_id, created_at) VALUES (?, ?)",
                        person_rows)
        cur.executemany("INSERT INTO identity_record VALUES (?,?,?,?,?,?,?,?,?)", record_rows)
        cur.executemany("INSERT INTO identity_block VALUES (?,?,?)", block_rows)
        for site, rows in resources.items():
            cur.executemany(
                "INSERT INTO site_resource (site_id, resource_type, resource_id, epoch, seq, "
                "deleted, patient_id, body, received_at, dedup_keys) VALUES "
                "(?,?,?,?,?,?,?,?,?,?)",
                [(site, rtype, rid_, "e1", seq, False,
                  body["subject"]["reference"].split("/")[1] if "subject" in body
                  else rid_,
                  (raw_body := json.dumps(body, ensure_ascii=False).encode()),
                  now.isoformat(sep=" "),
                  _stored_keys(StoredChange(rtype, rid_, seq, False, None, raw_body)))
                 for seq, (rtype, rid_, body) in enumerate(rows, 1)])
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    archive = ArchiveStore(engine)
    for site, rows in resources.items():      # the sync cursors: every site caught up
        archive.apply(site, "e1", [], after=len(rows), node_head=len(rows), rejected=0,
                      now=now, caught_up=True)
    engine.dispose()
    print(f"loaded in {time.perf_counter() - started:.0f} s", flush=True)
    return ids


async def _signed_in(base: str, user: str, site: str):  # noqa: ANN202
    import httpx

    client = httpx.AsyncClient(base_url=base, timeout=60)
    form = await client.get("/console/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
    answer = await client.post("/console/signin", data={
        "csrf": csrf, "site": site, "username": user, "password": PASSWORD})
    if answer.status_code != 303:
        raise SystemExit(f"sign-in as {user} failed: {answer.status_code}")
    return client


async def drive(base: str, ids: list[str], users: int, requests: int, seed: int,
                think_ms: float = 0.0) -> dict[str, Any]:
    doctors = [await _signed_in(base, DOCTOR[0], DOCTOR[1]) for _ in range(users // 2)]
    admins = [await _signed_in(base, ADMIN[0], "consortium") for _ in range(users - users // 2)]
    rng = random.Random(seed)
    # the county doctor's patients: persons with a record at county-a (every 5th person)
    mine = [pid for n, pid in enumerate(ids) if n % len(HOME_SITES) == 0]
    jobs: asyncio.Queue[tuple[str, Any, str]] = asyncio.Queue()
    for k in range(requests):
        if k % 2 == 0:
            jobs.put_nowait(("record", doctors[k // 2 % len(doctors)],
                             f"/console/patients/{rng.choice(mine)}"))
        else:
            jobs.put_nowait(("admin", admins[k // 2 % len(admins)], "/console/admin"))
    seen: dict[str, dict[str, list[float]]] = {
        "record": {"server": [], "client": []}, "admin": {"server": [], "client": []}}
    failures: list[str] = []

    async def worker() -> None:
        while not jobs.empty():
            kind, client, path = jobs.get_nowait()
            t = time.perf_counter()
            answer = await client.get(path)
            client_ms = (time.perf_counter() - t) * 1000
            if answer.status_code != 200:
                failures.append(f"{path}: {answer.status_code}")
                continue
            timing = re.search(r"app;dur=([\d.]+)", answer.headers.get("server-timing", ""))
            seen[kind]["client"].append(client_ms)
            if timing:
                seen[kind]["server"].append(float(timing[1]))
            if think_ms:                    # a person reads the page before the next one
                await asyncio.sleep(rng.uniform(0, 2 * think_ms) / 1000)

    for client in doctors[:1] + admins[:1]:        # warm-up: first page of each kind
        await client.get("/console/admin" if client in admins else
                         f"/console/patients/{mine[0]}")
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(users)))
    elapsed = time.perf_counter() - started
    for client in doctors + admins:
        await client.aclose()
    out: dict[str, Any] = {"users": users, "requests": requests, "think_ms": think_ms,
                           "pages_per_s": round(requests / elapsed, 1),
                           "failures": len(failures), "failure_examples": failures[:3]}
    for kind, figures in seen.items():
        for which, values in figures.items():
            if values:
                out[f"{kind}_{which}_p50_ms"] = round(statistics.median(values), 1)
                out[f"{kind}_{which}_p99_ms"] = round(percentile(values, 0.99), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--requests", type=int, default=800)
    ap.add_argument("--db", type=Path, default=None, help="keep the loaded store here")
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--think-ms", type=float, default=0.0,
                    help="mean time a user spends on a page before the next (uniform "
                         "0..2×); 0: back to back, the harshest load")
    args = ap.parse_args()
    from federation.security.ca import init_ca

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ca = init_ca(root / "ca")
        ca.issue_gateway(root / "gateway")
        db = args.db or root / "console.db"
        url = f"sqlite:///{db}"
        ids = build(url, args.persons, args.seed)
        ctx = mp.get_context("spawn")
        ready: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=gateway_process, args=(url, str(root), ready), daemon=True)
        proc.start()
        try:
            _, port = ready.get(timeout=120)
            result = asyncio.run(drive(f"http://127.0.0.1:{port}", ids, args.users,
                                       args.requests, args.seed, args.think_ms))
        finally:
            proc.terminate()
            proc.join(10)
    result["persons"] = len(ids)
    print(json.dumps(result))
    print(f"\n{'page':<8} {'server p50':>11} {'server p99':>11} {'client p50':>11} "
          f"{'client p99':>11}   (ms; aim p99 ≤ 300)")
    for kind in ("record", "admin"):
        print(f"{kind:<8} " + " ".join(f"{result.get(f'{kind}_{w}_{q}_ms', float('nan')):>11}"
                                      for w in ("server", "client") for q in ("p50", "p99")))


if __name__ == "__main__":
    main()
