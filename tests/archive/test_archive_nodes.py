"""The archive with real node agents over mutual TLS: one person's record from all six
sites, federate and mixed modes, a federated site that hangs or dies (the answer still
comes within the deadline, naming it), and a critical lab result reaching the right
site's node inbox exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import httpx
from sqlalchemy import text

from federation.archive import care
from federation.archive.care import CareEpisode
from federation.gateway.app import start_gateway
from federation.identity.index import RecordRef
from federation.nodes.agent import start_node
from federation.nodes.fhir_mapping import stable_id
from tests.archive.conftest import bearer, entries, token
from tests.conftest import SITE_TIERS, gateway_settings, node_settings

ALL = tuple(SITE_TIERS)


async def until(condition, timeout: float = 30.0) -> None:
    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(poll(), timeout)


async def caught_up(gw, nodes) -> None:
    async def check() -> bool:
        for node in nodes:
            cursor = await asyncio.to_thread(gw.archive.cursor, node.settings.site_id)
            head = await asyncio.to_thread(node.feed.head)
            if cursor is None or head == 0 or cursor.after != head:
                return False
        return True
    await until(check, 60)


async def _gateway(pki, consortium, tmp_path: Path, federate=(), **over):
    # a first sync of several sites in one test process starves heartbeats on a small
    # machine: a generous liveness window keeps nodes 'online' while it runs
    over = {"heartbeat_interval_ms": 500, "unreachable_after_ms": 6000} | over
    settings = gateway_settings(pki, f"sqlite:///{tmp_path}/gateway.db", consortium,
                                archive_care_window_days=20000, **over)
    sites = tuple(replace(s, archive="federate" if s.id in federate else "replicate")
                  for s in settings.sites)
    return await start_gateway(replace(settings, sites=sites))


def _http(gw) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}", timeout=30)


async def _person_at(gw, *sites: str) -> tuple[str, dict[str, str]]:
    """A person the EMPI holds records of at every one of ``sites``."""
    people = gw.archive_service.people
    for site in sites[:1]:
        for row in await asyncio.to_thread(gw.archive.of_type, "Patient", site):
            person = await asyncio.to_thread(people.person_of, site, row.resource_id)
            refs = dict(await asyncio.to_thread(people.records_of, person)) if person else {}
            if set(sites) <= set(refs):
                return person, refs
    raise AssertionError(f"no person at all of {sites}")


async def test_one_person_from_all_six_sites(pki, consortium, tmp_path, start_nodes):
    gw = await _gateway(pki, consortium, tmp_path)
    try:
        nodes = await start_nodes(gw, *ALL)
        await caught_up(gw, nodes)
        # an administrator links one patient record of every site to one person (EMPI
        # manual link), so that a single person's record spans the whole consortium
        firsts = {}
        for site in ALL:
            rows = await asyncio.to_thread(gw.archive.of_type, "Patient", site)
            firsts[site] = sorted(r.resource_id for r in rows)[0]
        base = RecordRef("city-1", firsts["city-1"])
        for site in ALL[1:]:
            person = await asyncio.to_thread(gw.identity.link_records, base,
                                             RecordRef(site, firsts[site]), actor="test")
        async with _http(gw) as http:
            auth = bearer(await token(http, pki, "county-a"))
            reply = await http.get(f"/fhir/Patient/{person}/$everything",
                                   params={"_count": "5000"}, headers=auth)
            assert reply.status_code == 200, reply.text
            found = entries(reply.json())
        sources = {r["meta"]["source"].rsplit(":", 1)[1] for r in found}
        assert sources == set(ALL)
        patients = {r["meta"]["source"].rsplit(":", 1)[1]: r["id"] for r in found
                    if r["resourceType"] == "Patient"}
        assert patients == firsts
        # the archive's record equals what the nodes serve, less duplicates
        served = 0
        for node in nodes:
            site = node.settings.site_id
            mine = [r for r in found if r["meta"]["source"].endswith(":" + site)]
            live = await asyncio.to_thread(
                lambda n=node, first=firsts[site]: list(n.service.fetch(first, [])))
            assert {r["id"] for r in mine} <= {e.id for e in live}
            served += len(live)
        assert len(found) <= served
    finally:
        await gw.stop(0.2)


async def test_mixed_modes_and_a_federated_site_that_hangs_or_dies(
        pki, consortium, tmp_path, start_nodes):
    gw = await _gateway(pki, consortium, tmp_path, federate=("county-a",),
                        archive_deadline_ms=800)
    blackhole = socket.socket()
    try:
        nodes = await start_nodes(gw, "city-1", "county-a")
        await caught_up(gw, nodes)
        counts = await asyncio.to_thread(gw.archive.counts)
        assert set(counts["county-a"]) == {"Patient"}            # the rest stays at the site
        assert len(counts["city-1"]) > 3
        person, refs = await _person_at(gw, "city-1", "county-a")
        county = nodes[1]
        live = {e.id for e in await asyncio.to_thread(
            lambda: list(county.service.fetch(refs["county-a"], [])))}
        async with _http(gw) as http:
            auth = bearer(await token(http, pki, "city-1"))
            url = f"/fhir/Patient/{person}/$everything"
            started = dt.datetime.now(dt.UTC)
            bundle = (await http.get(url, params={"_count": "5000"}, headers=auth)).json()
            fetched = [r for r in entries(bundle)
                       if r["meta"]["source"].endswith(":county-a")]
            assert {r["id"] for r in fetched} == live             # fetched live, all of it
            assert all(r["meta"]["lastUpdated"] >= started.isoformat()[:19] for r in fetched)
            assert not entries(bundle, "outcome")
            log = [e for e in gw.store.list_exchanges(limit=50)
                   if e.operation == "NodeAgent/FetchPatientResources"]
            assert log[0].target_site == "county-a" and log[0].outcome == "ok"
            assert log[0].purpose == "TREAT" and log[0].records == len(live)

            # the site hangs: its endpoint accepts connections and never answers
            endpoint = gw.store.get_node("county-a").endpoint
            blackhole.bind(("127.0.0.1", 0))
            blackhole.listen(8)
            port = blackhole.getsockname()[1]
            with gw.store.engine.begin() as conn:
                conn.execute(text("UPDATE node SET endpoint = :e WHERE site_id = 'county-a'"),
                             {"e": f"127.0.0.1:{port}"})
            t0 = time.perf_counter()
            reply = await http.get(url, params={"_count": "5000"}, headers=auth)
            elapsed = time.perf_counter() - t0
            assert reply.status_code == 200 and elapsed < 0.8 + 0.7, elapsed
            partial = reply.json()
            issue = entries(partial, "outcome")[0]["issue"][0]
            assert issue["severity"] == "warning" and issue["code"] == "timeout"
            assert "county-a" in issue["diagnostics"]
            assert issue["details"]["coding"][0]["code"] == "county-a"
            assert not [r for r in entries(partial) if r["meta"]["source"].endswith(":county-a")]
            assert [r for r in entries(partial) if r["meta"]["source"].endswith(":city-1")]

            # the site dies: its node stops (still 'online' until the heartbeat sweep)
            with gw.store.engine.begin() as conn:
                conn.execute(text("UPDATE node SET endpoint = :e WHERE site_id = 'county-a'"),
                             {"e": endpoint})
            await county.stop(0)
            t0 = time.perf_counter()
            reply = await http.get(url, headers=auth)
            assert time.perf_counter() - t0 < 1.5
            issue = entries(reply.json(), "outcome")[0]["issue"][0]
            assert "county-a" in issue["diagnostics"]
    finally:
        blackhole.close()
        await gw.stop(0.2)


class _Episodes:
    """An in-test care-episode source: an open referral for one person, held at county-a
    (and a consult at city-1, whose own results must not alert it)."""

    person: str | None = None

    def __init__(self, ctx) -> None:
        pass

    def open_episodes(self, person_id: str) -> list[CareEpisode]:
        if person_id != _Episodes.person:
            return []
        return [CareEpisode("county-a", "referral", "ServiceRequest/r-1", ("dr.zhang",)),
                CareEpisode("city-1", "consult", "ServiceRequest/c-1")]


async def test_a_critical_result_alerts_the_other_sites_episode_once(
        pki, consortium, tmp_path, start_nodes, monkeypatch):
    monkeypatch.setattr(care, "EPISODE_SOURCES", [_Episodes])
    his = tmp_path / "city-his.sqlite"
    shutil.copy(consortium.site("city-1").source_path, his)
    gw = await _gateway(pki, consortium, tmp_path)
    try:
        settings = node_settings(pki, consortium, "city-1", gw.grpc_port, tmp_path)
        settings = replace(settings, feed_scan_interval_ms=200,
                           source=replace(settings.source, path=his))
        city = await start_node(settings)
        (county,) = await start_nodes(gw, "county-a")
        await caught_up(gw, [city, county])
        person, refs = await _person_at(gw, "city-1", "county-a")
        _Episodes.person = person
        local = _local_id(his, refs["city-1"])
        now = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S")
        with sqlite3.connect(his) as db:
            db.execute("INSERT INTO LAB_MASTER VALUES (?,?,?,?,?,?,?,?,?)",
                       ("RCRIT0001", local, None, "BIO", "生化", "血液", now, now, "F"))
            db.executemany("INSERT INTO LAB_RESULT VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
                ("RCRIT0001-1", "RCRIT0001", local, None, 1, "K", "钾", "2823-3", "7.1", "N",
                 "mmol/L", "3.5", "5.3", None, "HH", now),
                ("RCRIT0001-2", "RCRIT0001", local, None, 2, "NA", "钠", "2951-2", "140", "N",
                 "mmol/L", "137", "147", None, None, now)])
        started = time.perf_counter()

        async def delivered() -> bool:
            return any(i.kind == "notice" for i in await asyncio.to_thread(county.inbox.items))
        await until(delivered, 15)
        latency = time.perf_counter() - started
        assert latency < 10, latency
        notices = [i for i in county.inbox.items() if i.kind == "notice"]
        assert len(notices) == 1
        import json
        comm = json.loads(notices[0].payload)
        assert comm["resourceType"] == "Communication" and comm["priority"] == "stat"
        assert comm["subject"]["reference"] == f"Patient/{refs['county-a']}"
        assert "7.1" in comm["payload"][0]["contentString"]
        assert comm["about"][0]["reference"] == \
            f"Observation/{stable_id('city-1', 'Observation', 'RCRIT0001-1')}"
        # replaying the feed, or another replica seeing it, alerts nobody twice
        await gw.puller.pull("city-1", replay_from=0)
        await asyncio.sleep(0.5)
        with gw.store.engine.connect() as conn:
            rows = conn.execute(text("SELECT site_id FROM work_item WHERE kind = 'notice'")
                                ).scalars().all()
        assert rows == ["county-a"]                      # only there, only once
        await city.stop(0.1)
    finally:
        _Episodes.person = None
        await gw.stop(0.2)


def _local_id(his: Path, fhir_id: str) -> str:
    with sqlite3.connect(his) as db:
        for (local,) in db.execute("SELECT PATIENT_ID FROM PAT_MASTER_INDEX"):
            if stable_id("city-1", "Patient", local) == fhir_id:
                return local
    raise AssertionError("no such patient in the HIS copy")
