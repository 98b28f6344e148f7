"""Three gateway processes on one PostgreSQL, one killed midway, nothing lost.

The nodes and the clients are given all three replicas (``gateway = "a,b,c"``:
round-robin over those that answer). Referrals and consults are made through all three
(each with its idempotency key; a call refused by the dead replica is sent again), three
clients race to claim each consult through different replicas, and the target reads the
patient's archive record. Gateway 2 is killed with SIGKILL after the first half. Then
the consults are claimed, a study is streamed, reports signed and acknowledged. At the
end: every referral and consult exists once, each consult was claimed once, every
referral reached the target node's inbox once with its packet and every report the
requester's once, every work item was acknowledged, the audit log verifies and covers
every exchange, and the EMPI put no person's records under two persons.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import text

from federation._proto.v1 import archive_pb2, archive_pb2_grpc
from federation.audit.verify import verify_store
from federation.consult.client import ConsultClient
from federation.consult.service import NewConsult
from federation.demo.workspace import DemoLayout, prepare_workspace
from federation.errors import FederationError, Unavailable
from federation.nodes.agent import RunningNode, start_node
from federation.referral.client import ReferralClient
from federation.referral.service import NewReferral
from federation.rpc.channels import secure_channel
from federation.security.ca import GATEWAY_SERVER_NAME
from federation.security.tls import TlsMaterial
from federation.settings import load_node_settings
from federation.store import make_engine, upgrade
from federation.synth.studies import write_ecg_study
from tests.deploy.gateways import Gateways, caught_up, until
from tests.pg_util import throwaway_database
from tests.referral.conftest import bundle

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ORIGIN, TARGET = "county-a", "city-1"
REFERRALS = 12
CONSULTS = 4
ST_ELEVATION = {"system": "http://snomed.info/sct", "code": "164865005",
                "display": "ST elevation"}


def _rows(url: str, sql: str, **params) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


async def _create(client: ReferralClient, new: NewReferral) -> str:
    """Create, sending the same request again when a gateway died under the call: the
    idempotency key makes the second one return the first one's referral."""
    for _ in range(20):
        try:
            ref, _ = await client.create(new)
            return ref.id
        except Unavailable:
            await asyncio.sleep(0.3)
    raise AssertionError(f"no gateway took referral {new.request_id}")


async def _again(call, what: str):
    """``call()``, sent again while the replica it reached is down (refused, not run)."""
    for _ in range(20):
        try:
            return await call()
        except Unavailable:
            await asyncio.sleep(0.3)
    raise AssertionError(f"no gateway took {what}")


async def _race_to_claim(claimers: list[ConsultClient], consult_id: str) -> int:
    """Three claims at once through different replicas; how many won."""
    async def claim(c: ConsultClient) -> bool:
        try:
            await c.act(consult_id, "claim")
            return True
        except FederationError as exc:
            assert not isinstance(exc, Unavailable), exc
            return False
    return sum(await asyncio.gather(*(claim(c) for c in claimers)))


async def _everything(address: str, tls: TlsMaterial, patient: str) -> int:
    async with secure_channel(address, tls, 16 << 20, server_name=GATEWAY_SERVER_NAME) as ch:
        stub = archive_pb2_grpc.ArchiveStub(ch)
        for _ in range(20):
            try:
                reply = await stub.Everything(archive_pb2.EverythingRequest(
                    patient_id=patient, context=archive_pb2.ReadContext(
                        purpose_of_use="TREAT", practitioner_id="dr-li")), timeout=30)
                return reply.total
            except Exception as exc:  # noqa: BLE001 (only a dying gateway is retried)
                if "UNAVAILABLE" not in str(getattr(exc, "code", lambda: "")()):
                    raise
                await asyncio.sleep(0.3)
    raise AssertionError("no gateway answered the archive read")


def _material(layout: DemoLayout, name: str) -> TlsMaterial:
    folder = layout.workdir / "pki" / name
    return TlsMaterial.load(folder / f"{name}.crt", folder / f"{name}.key", layout.ca_cert)


async def test_three_gateways_one_killed_nothing_lost_or_doubled(tmp_path: Path) -> None:
    layout = await asyncio.to_thread(prepare_workspace, tmp_path / "consortium", people=40)
    with throwaway_database(prefix="fed_3gw") as url:
        await asyncio.to_thread(upgrade, url)            # the migration Job, once
        gateways = Gateways(layout, url, 3)
        nodes: dict[str, RunningNode] = {}
        clients: list[ReferralClient] = []
        consult_clients: list[ConsultClient] = []
        try:
            for i in range(3):                           # the first creates the key ring
                await gateways.start(i)
            for site in (ORIGIN, TARGET):
                settings = load_node_settings(layout.node_configs[site])
                nodes[site] = await start_node(dataclasses.replace(
                    settings, gateway=gateways.addresses))
            await until(lambda: caught_up(url, (ORIGIN, TARGET)), 180,
                         "the archive to read both nodes' feeds")
            patients = [r.record_id for r in _rows(
                url, "SELECT record_id FROM identity_record WHERE site_id = :s AND "
                     "state = 'linked' ORDER BY record_id", s=ORIGIN)]
            assert len(patients) >= REFERRALS // 2

            origin = _material(layout, ORIGIN)
            clients = [ReferralClient(gateways.addresses, origin,
                                      practitioner=("dr-wang", "doctor")) for _ in range(3)]
            news = [NewReferral(
                patient_id=patients[n % len(patients)], urgency="urgent", direction="upward",
                target_site=TARGET, department="cardiology", consent_method="written",
                reason={"system": "http://hl7.org/fhir/sid/icd-10", "code": "I21.9"},
                request_id=f"three-gateways-ref-{n}") for n in range(REFERRALS)]
            doctor = ConsultClient(gateways.addresses, _material(layout, "dr-wang"))
            specialists = [ConsultClient(gateways.addresses, _material(layout, "dr-li"))
                           for _ in range(3)]
            consult_clients = [doctor, *specialists]
            studies = layout.workdir / "studies" / ORIGIN
            asks = []
            for n in range(CONSULTS):
                write_ecg_study(studies, f"ecg-3gw-{n}", patients[n])
                asks.append(NewConsult(
                    patient_id=patients[n], kind="ecg", question="胸痛2小时，请判读心电图",
                    urgency="urgent", consent_method="written", study_ids=(f"ecg-3gw-{n}",),
                    reason={"system": "http://hl7.org/fhir/sid/icd-10", "code": "R07.4"},
                    request_id=f"three-gateways-consult-{n}"))
            half = REFERRALS // 2
            made = list(await asyncio.gather(*(_create(clients[n % 3], news[n])
                                               for n in range(half))))
            consults = []
            for n in range(CONSULTS // 2):          # asked, and raced for, before the kill
                c, _ = await doctor.request(asks[n])
                consults.append(c.id)
                assert await _race_to_claim(specialists, c.id) == 1
            reading = asyncio.create_task(_everything(gateways.addresses,
                                                      _material(layout, TARGET), patients[0]))
            gateways.kill(1)                             # mid-run: SIGKILL, no goodbye
            made += await asyncio.gather(*(_create(clients[n % 3], news[n])
                                           for n in range(half, REFERRALS)))
            assert await reading > 0                     # the archive read got through
            # a request sent again after the kill is the same referral, not a second one
            assert await _create(clients[0], news[0]) == made[0]
            for n in range(CONSULTS // 2, CONSULTS):
                c, _ = await _again(lambda n=n: doctor.request(asks[n]), f"consult {n}")
                consults.append(c.id)
                await _again(lambda c=c: specialists[0].act(c.id, "claim"), "a claim")
            again, created = await _again(lambda: doctor.request(asks[0]), "a repeat")
            assert (again.id, created) == (consults[0], False)
            got = await _again(lambda: specialists[1].fetch_study(
                consults[0], "ecg-3gw-0", tmp_path / "downloads"), "a study")
            assert got and got[0].path.read_bytes() == (
                studies / "ecg-3gw-0" / got[0].path.name).read_bytes()
            for cid in consults:                    # the claimant signs, the requester acks
                await _again(lambda cid=cid: specialists[2].report(
                    cid, "窦性心律，下壁导联ST段抬高", [ST_ELEVATION]), "a report")
                closed = await _again(lambda cid=cid: doctor.act(cid, "ack"), "an ack")
                assert closed.business_status == "closed"

            target = nodes[TARGET]

            def delivered() -> bool:
                items = target.inbox.items()
                return all(bundle(items, r, "referral") and bundle(items, r, "packet")
                           for r in made)
            await until(delivered, 180, "every referral and packet at the target")
            origin = nodes[ORIGIN]

            def reported() -> bool:
                ids = [json.loads(i.payload).get("id") for i in origin.inbox.items()]
                return all(ids.count(f"{c}-r1-delivery") == 1 for c in consults)
            await until(reported, 120, "every signed report at the requester")
            await until(lambda: not _rows(
                url, "SELECT item_id FROM work_item WHERE acked_at IS NULL AND site_id "
                     "IN (:a, :b)", a=ORIGIN, b=TARGET), 60, "every work item acknowledged")
        finally:
            for client in [*clients, *consult_clients]:
                await client.close()
            for node in nodes.values():
                await node.stop(0.1)
            gateways.stop_all()

        # every referral once, under its own key
        tasks = _rows(url, "SELECT request_id, count(*) AS n FROM workflow_task WHERE "
                           "request_id LIKE 'three-gateways-ref-%' GROUP BY request_id")
        assert sorted((t.request_id, t.n) for t in tasks) == sorted(
            (n.request_id, 1) for n in news)
        assert len(set(made)) == REFERRALS
        asked = _rows(url, "SELECT request_id, count(*) AS n FROM workflow_task WHERE "
                           "request_id LIKE 'three-gateways-consult-%' GROUP BY request_id")
        assert sorted((t.request_id, t.n) for t in asked) == sorted(
            (a.request_id, 1) for a in asks)
        claims = _rows(url, "SELECT task_id, count(*) AS n FROM workflow_event WHERE "
                            "action = 'claim' GROUP BY task_id")
        assert sorted((c.task_id, c.n) for c in claims) == sorted((c, 1) for c in consults)
        # the target's inbox holds each referral and packet once (``bundle`` fails on two)
        items = target.inbox.items()
        assert all(bundle(items, r, "referral") and bundle(items, r, "packet") for r in made)
        # the audit log covers every exchange of the three replicas and verifies
        engine = make_engine(url)
        try:
            report = await asyncio.to_thread(verify_store, engine,
                                             layout.ca_cert.read_bytes())
            assert report.ok, report.first()
            (exchanges,) = _rows(url, "SELECT count(*) AS n FROM exchange_log")
            assert report.tree_size == exchanges.n > 0
        finally:
            engine.dispose()
        # the EMPI: no true person's records split across two linked persons
        truth: dict[tuple[str, str], str] = {}
        with layout.manifest.truth_path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                truth[(row["site_id"], row["local_patient_id"])] = row["person_id"]
        persons_of = defaultdict(set)
        for r in _rows(url, "SELECT site_id, record_id, person_id FROM identity_record "
                            "WHERE state = 'linked'"):
            true = truth.get((r.site_id, r.record_id))
            if true is not None:
                persons_of[true].add(r.person_id)
        split = {p: ids for p, ids in persons_of.items() if len(ids) > 1}
        assert not split, f"{len(split)} people's records are under two persons"
        assert "Traceback" not in "".join(
            (layout.logs / f"gateway-{i}.log").read_text() for i in (1, 3))
