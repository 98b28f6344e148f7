"""Delivery guarantees with real processes' parts: the target node down for a while and
the gateway restarted meanwhile (nothing lost, nothing twice, in order per referral);
two gateway replicas on one PostgreSQL (a referral made through one reaches a node on the
other, two staff accepting through different replicas, the loop closed through either,
time limits escalated once whichever replica's sweep finds them)."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import replace
from importlib import resources

import pytest

from federation.errors import InvalidTransition
from federation.gateway.app import start_gateway
from federation.nodes.agent import start_node
from federation.referral.moves import Details
from tests.conftest import gateway_settings, node_settings
from tests.pg_util import throwaway_database
from tests.referral.conftest import (
    about,
    bundle,
    start_consortium,
    stop_consortium,
    upward,
)


def _fast_rules(tmp_path) -> str:
    text = resources.files("federation.referral").joinpath("consortium.toml").read_text()
    text = text.replace('acknowledge = "4h"', 'acknowledge = "1s"')
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


async def test_nothing_lost_while_the_target_and_the_gateway_are_down(
        staff_pki, consortium, tmp_path):
    c = await start_consortium(staff_pki, consortium, tmp_path / "state",
                               f"sqlite:///{tmp_path}/gateway.db")
    try:
        city = c.nodes["city-1"]
        await city.stop(0.1)                                     # the target goes away
        doctor = c.client("dr-wang")
        made = []
        for n in range(6):
            ref, _ = await doctor.create(upward(c.linked("county-a")[n % 3]))
            await doctor.act(ref.id, "note", Details(note=f"first note {n}"))
            await doctor.act(ref.id, "note", Details(note=f"second note {n}"))
            made.append(ref.id)
        port = c.gateway.grpc_port                               # the gateway restarts
        await c.gateway.stop(0.1)
        settings = replace(c.gateway.settings, grpc_listen=f"127.0.0.1:{port}")
        c.gateway = await start_gateway(settings)
        for client in c.clients:
            await client.close()
        c.clients.clear()
        c.nodes["city-1"] = await start_node(node_settings(   # the target comes back
            staff_pki, consortium, "city-1", port, tmp_path / "state"))
        items = await c.inbox("city-1", lambda i: all(len(about(i, r)) == 4 for r in made),
                              timeout=90)
        per_referral = defaultdict(list)
        for item in sorted(items, key=lambda i: i.sequence):
            body = json.loads(item.payload)
            if item.kind == "referral":
                rid, what = body["id"].rsplit("-", 1)
            else:
                rid, what = body["about"][0]["reference"].split("/")[1], \
                    body["payload"][0]["contentString"].split()[0]
            per_referral[rid].append(what)
        for rid in made:                      # in the order they happened, per referral
            got = per_referral[rid]
            assert got[0] == "referral" and sorted(got) == ["first", "packet", "referral",
                                                            "second"]
            assert got.index("first") < got.index("second")
        ids = [i.item_id for i in items]
        assert len(ids) == len(set(ids))                         # nothing twice
        for _ in range(600):                 # acks are pipelined behind the stored items
            if not c.gateway.store.pending_for("city-1"):
                break
            await asyncio.sleep(0.1)
        assert not c.gateway.store.pending_for("city-1")         # everything acknowledged

        # the origin node away: the referral goes at once, its packet when the node is back
        await c.nodes["county-a"].stop(0.1)
        ref, _ = await c.client("dr-wang").create(upward(c.linked("county-a")[0]))
        await c.inbox("city-1", lambda i: bundle(i, ref.id, "referral"))
        for _ in range(600):
            pending = (await c.client("dr-wang").get(ref.id)).pending_work
            if pending and "attempt" in pending[0] and "—" in pending[0]:
                break
            await asyncio.sleep(0.1)
        assert pending and pending[0].startswith("packet: attempt") and "county-a" in pending[0]
        c.nodes["county-a"] = await start_node(node_settings(
            staff_pki, consortium, "county-a", port, tmp_path / "state"))
        await c.inbox("city-1", lambda i: bundle(i, ref.id, "packet"), timeout=90)
        assert (await c.client("dr-wang").get(ref.id)).pending_work == []
    finally:
        await stop_consortium(c)


@pytest.mark.postgres
async def test_two_replicas_on_one_postgresql(staff_pki, consortium, tmp_path):
    with throwaway_database(prefix="fed_ref") as url:
        rules = _fast_rules(tmp_path)
        a = await start_consortium(staff_pki, consortium, tmp_path / "state", url,
                                   referral_rules=rules, referral_sweep_ms=200)
        b_gateway = await start_gateway(gateway_settings(
            staff_pki, url, consortium, referral_rules=rules, referral_sweep_ms=200))
        b = type(a)(b_gateway, a.nodes, staff_pki)
        try:
            # made through B (which dials county-a's node registered on A) …
            ref, _ = await b.client("dr-wang").create(upward(a.linked("county-a")[0]))
            # … and delivered by A to city-1's node
            await a.inbox("city-1", lambda i: about(i, ref.id, "referral"))

            async def accept(client, note):
                try:
                    return await client.act(ref.id, "accept", Details(admission_note=note))
                except InvalidTransition as exc:
                    return exc

            results = await asyncio.gather(accept(a.client("dr-li"), "via A"),
                                           accept(b.client("dr-zhou"), "via B"))
            losers = [r for r in results if isinstance(r, InvalidTransition)]
            assert len(losers) == 1 and "it is accepted" in losers[0].message
            await b.client("dr-li").act(ref.id, "start")
            await a.client("dr-li").act(ref.id, "complete", Details(result_text="done"))
            for _ in range(1200):      # county-a's node acks the result on A; B sees it closed
                view = await b.client("dr-wang").get(ref.id)
                if view.referral.business_status == "closed":
                    break
                await asyncio.sleep(0.05)
            assert view.referral.business_status == "closed"
            assert [h["action"] for h in view.history].count("accept") == 1

            # an urgent referral nobody triages: both replicas sweep; escalated once
            late, _ = await a.client("dr-wang").create(upward(a.linked("county-a")[1]))
            for _ in range(600):
                alerts = await b.client("admin-zhao").alerts()
                if any(x["referral"] == late.id for x in alerts):
                    break
                await asyncio.sleep(0.1)
            mine = [x for x in await a.client("admin-zhao").alerts() if x["referral"] == late.id]
            assert sorted(x["audience"] for x in mine) == [
                "regional-admin", "site:city-1", "site:county-a"]
            history = [h["action"] for h in (await a.client("dr-li").get(late.id)).history]
            assert history.count("escalate") == 1
            items = await a.inbox("city-1", lambda i: about(i, late.id, "notice"))
            alert = about(items, late.id, "notice")[0]
            assert alert["resourceType"] == "Communication" and alert["priority"] == "urgent"
            listed, _ = await a.client("dr-li").search(escalated_only=True)
            assert late.id in [r.id for r in listed] and ref.id not in [r.id for r in listed]
        finally:
            for client in b.clients:
                await client.close()
            await b_gateway.stop(0.1)
            await stop_consortium(a)
