"""The archive pulls each site's change feed over mTLS: the whole history first, then
increments when the node says it changed; replays are idempotent and a restarted node
resumes its feed rather than starting it again."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from federation.archive.sync import check_change
from federation.errors import InvalidInput
from federation.fhir_systems import site_urn
from federation.nodes.agent import start_node
from federation.synth import ConsortiumManifest
from tests.conftest import node_settings


async def until(condition, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(poll(), timeout)


def caught_up(gateway, node, past: int = 0):
    """The archive holds the node's whole feed, whose head is beyond ``past``."""
    async def check() -> bool:
        cursor = await asyncio.to_thread(gateway.archive.cursor, node.settings.site_id)
        head = await asyncio.to_thread(node.feed.head)
        return cursor is not None and head > past and cursor.after == head
    return check


async def test_full_history_arrives_with_every_source_kind(gateway, start_nodes) -> None:
    (node,) = await start_nodes(gateway, "county-b")
    await until(caught_up(gateway, node))
    held = (await asyncio.to_thread(gateway.archive.counts, "county-b"))["county-b"]
    assert held == await asyncio.to_thread(node.feed.count)
    # HIS patients and visits, LIS results over HL7, coded visit diagnoses
    for rtype in ("Patient", "Encounter", "Condition", "Observation", "DiagnosticReport",
                  "MedicationRequest"):
        assert held.get(rtype, 0) > 0, rtype
    cursor = await asyncio.to_thread(gateway.archive.cursor, "county-b")
    assert cursor.rejected == 0 and cursor.caught_up_at is not None

    async def pulls() -> list:
        return [e for e in await asyncio.to_thread(gateway.store.list_exchanges, limit=50)
                if e.operation == "NodeAgent/StreamChanges" and e.target_site == "county-b"]

    async def logged_whole() -> bool:  # a pull's row is written just after its last batch
        return sum(e.records for e in await pulls()) == sum(held.values())

    await until(logged_whole)
    log = await pulls()
    assert log and log[0].outcome == "ok"


async def test_a_change_at_the_site_arrives_as_an_increment(
        pki, gateway, consortium: ConsortiumManifest, tmp_path: Path) -> None:
    # a private copy of a township export that the test may edit
    folder = tmp_path / "export"
    shutil.copytree(consortium.site("township-a1").source_path, folder)
    settings = node_settings(pki, consortium, "township-a1", gateway.grpc_port, tmp_path)
    settings = replace(settings, feed_scan_interval_ms=200,
                       source=replace(settings.source, path=folder))
    node = await start_node(settings)
    try:
        await until(caught_up(gateway, node))
        before = await asyncio.to_thread(gateway.archive.cursor, "township-a1")
        visits = folder / "visits.csv"
        rows = list(csv.reader(visits.open(encoding="utf-8-sig", newline="")))
        header, dropped = rows[0], rows[-1]
        with visits.open("w", encoding="utf-8-sig", newline="") as fh:
            csv.writer(fh).writerows(rows[:-1])          # one visit deleted at the site
        await until(caught_up(gateway, node, past=before.after))
        after = await asyncio.to_thread(gateway.archive.cursor, "township-a1")
        # only the increment moved: the Encounter and its Condition became tombstones
        assert after.after - before.after == 2
        changes = await asyncio.to_thread(node.feed.changes, before.after)
        assert {(c.resource_type, c.deleted) for c in changes} == {
            ("Encounter", True), ("Condition", True)}
        gone = changes[0]
        assert await asyncio.to_thread(gateway.archive.get, "township-a1",
                                       gone.resource_type, gone.resource_id) is None
        assert header and dropped
    finally:
        await node.stop(0.1)


async def test_replaying_from_zero_is_idempotent(gateway, start_nodes) -> None:
    (node,) = await start_nodes(gateway, "township-b1")
    await until(caught_up(gateway, node))
    counts = await asyncio.to_thread(gateway.archive.counts, "township-b1")
    some = next(c for c in await asyncio.to_thread(node.feed.changes, 0, limit=5)
                if c.resource_type == "Patient")
    before = await asyncio.to_thread(gateway.archive.get, "township-b1", "Patient",
                                     some.resource_id)
    replay = await gateway.puller.pull("township-b1", replay_from=0)
    assert replay.stored == 0 and replay.after == replay.head      # every version was held
    assert await asyncio.to_thread(gateway.archive.counts, "township-b1") == counts
    assert await asyncio.to_thread(gateway.archive.get, "township-b1", "Patient",
                                   some.resource_id) == before


async def test_a_restarted_node_resumes_its_feed(pki, gateway, consortium, tmp_path) -> None:
    settings = node_settings(pki, consortium, "township-a2", gateway.grpc_port, tmp_path)
    node = await start_node(settings)
    await until(caught_up(gateway, node))
    epoch, head = node.feed.epoch, await asyncio.to_thread(node.feed.head)
    await node.stop(0.1)
    node = await start_node(settings)
    try:
        await asyncio.wait_for(node.link.status.connected_event.wait(), 10)
        result = await gateway.puller.pull("township-a2")
        assert (result.epoch, result.head, result.stored, result.reset) == (epoch, head, 0, False)
        assert await asyncio.to_thread(node.feed.head) == head
    finally:
        await node.stop(0.1)


async def test_a_node_that_lost_its_feed_is_read_again_whole(pki, gateway, consortium,
                                                             tmp_path) -> None:
    settings = node_settings(pki, consortium, "township-a2", gateway.grpc_port, tmp_path)
    node = await start_node(settings)
    await until(caught_up(gateway, node))
    held = await asyncio.to_thread(gateway.archive.counts, "township-a2")
    old_epoch = node.feed.epoch
    await node.stop(0.1)
    (settings.state_dir / "feed.sqlite").unlink()
    node = await start_node(settings)
    try:
        # the new feed has as many changes as the old one: the old cursor alone would
        # already look caught up, so wait for the new epoch
        async def new_epoch() -> bool:
            cursor = await asyncio.to_thread(gateway.archive.cursor, "township-a2")
            return cursor is not None and cursor.epoch == node.feed.epoch

        await until(new_epoch)
        await until(caught_up(gateway, node))
        cursor = await asyncio.to_thread(gateway.archive.cursor, "township-a2")
        assert cursor.epoch == node.feed.epoch != old_epoch
        assert await asyncio.to_thread(gateway.archive.counts, "township-a2") == held
    finally:
        await node.stop(0.1)


# ---------------------------------------------------------------- what the gateway refuses


def _patient(site: str, **over) -> bytes:
    doc = {"resourceType": "Patient", "id": "p1", "meta": {"source": site_urn(site)},
           "gender": "female"} | over
    return json.dumps(doc).encode()


def test_a_valid_change_names_its_patient() -> None:
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "meta": {"source": site_urn("county-a")}, "code": {"text": "GLU"},
           "subject": {"reference": "Patient/p1"}}
    assert check_change("county-a", "Observation", "o1", json.dumps(obs).encode()) == "p1"
    assert check_change("county-a", "Patient", "p1", _patient("county-a")) is None


@pytest.mark.parametrize(("rtype", "rid", "body", "message"), [
    ("Patient", "p1", _patient("county-b"), "comes from"),
    ("Patient", "p1", _patient("county-a", gender=7), "not valid FHIR R4"),
    ("Patient", "p2", _patient("county-a"), "different id"),
    ("Encounter", "p1", _patient("county-a"), "resourceType"),
    ("Patient", "p1", b'{"resourceType": "Patient", "id": "p1"', "not valid JSON"),
])
def test_a_bad_change_is_refused_with_a_reason(rtype, rid, body, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_change("county-a", rtype, rid, body)


# ---------------------------------------------------------------- reading the archive


async def test_an_operator_reads_a_synced_record_and_the_read_is_logged(
        pki, gateway, start_nodes) -> None:
    from federation.archive.read import patient_ref
    from federation.client import GatewayClient
    from federation.errors import NotFound, PermissionDenied

    (node,) = await start_nodes(gateway, "county-b")
    await until(caught_up(gateway, node))
    patient = next(c for c in await asyncio.to_thread(node.feed.changes, 0, limit=50)
                   if c.resource_type == "Patient")
    address = f"127.0.0.1:{gateway.grpc_port}"
    async with GatewayClient(address, pki.material("tester")) as client:
        record = await client.read_patient_record("county-b", patient.resource_id)
        assert record[0].resource_type == "Patient" and record[0].id == patient.resource_id
        for env in record[1:]:
            body = json.loads(env.json)
            ref = (body.get("subject") or body.get("patient") or {}).get("reference")
            assert ref == f"Patient/{patient.resource_id}"
        with pytest.raises(NotFound, match="holds no Patient/nobody"):
            await client.read_patient_record("county-b", "nobody")
        with pytest.raises(InvalidInput, match="purpose_of_use"):
            await client.read_patient_record("county-b", patient.resource_id, purpose="CURIOUS")
    async with GatewayClient(address, pki.material("county-a")) as as_node:
        with pytest.raises(PermissionDenied):
            await as_node.read_patient_record("county-b", patient.resource_id)
    reads = [e for e in await asyncio.to_thread(gateway.store.list_exchanges, limit=20)
             if e.operation == "Gateway/ReadPatientRecord"]
    # newest first; the node's refused attempt is an exchange too (audit trail)
    assert [e.outcome for e in reads] == ["refused", "error", "ok"]
    assert reads[0].requester_site == "county-a" and reads[0].status_code == "forbidden"
    assert reads[2].patient_ref == patient_ref("county-b", patient.resource_id)
    assert reads[2].records == len(record)
    assert all(patient.resource_id not in (e.patient_ref or "") + e.detail for e in reads)
