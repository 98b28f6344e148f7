"""Appending to the Merkle log in the exchange's transaction; proofs from stored tiles."""

from __future__ import annotations

import json
import random
import threading

from audit_factories import exchange
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import Engine, func, select

from federation.audit.log import AuditLog
from federation.audit.merkle import root_of, verify_consistency, verify_inclusion
from federation.audit.verify import verify_store
from federation.store import GatewayStore, make_engine
from federation.store.models import AuditParty, AuditTile, ExchangeLog


def test_every_exchange_row_appends_one_leaf(gw_store: GatewayStore, audit_log: AuditLog) -> None:
    ids = [gw_store.log_exchange(exchange(i)) for i in range(3)]
    ids += gw_store.log_exchanges([exchange(i) for i in range(3, 10)])
    head = audit_log.head()
    assert head.tree_size == 10
    leaves = audit_log.leaves(0, 10)
    assert [leaf.index for leaf in leaves] == list(range(10))
    assert [leaf.exchange_id for leaf in leaves] == ids
    assert head.root_hash == root_of([leaf.leaf_hash for leaf in leaves])
    event = json.loads(leaves[4].leaf)
    assert event["id"] == "4" and event["resourceType"] == "AuditEvent"
    assert audit_log.leaf_for_exchange(ids[4]).index == 4


def test_leaves_are_fhir_r4_audit_events_without_patient_data(gw_store: GatewayStore,
                                                              audit_log: AuditLog) -> None:
    variants = [
        exchange(0),
        exchange(1, outcome="refused", status_code="PERMISSION_DENIED",
                 detail="a node certificate may not call Gateway/SearchPatients"),
        exchange(2, outcome="timeout", status_code="DEADLINE_EXCEEDED", patient_ref=None,
                 operation="NodeAgent/SearchPatients", requester_kind="operator",
                 requester_id="alice", requester_site=None),
        exchange(3, outcome="error", status_code="not-found", purpose="ETREAT"),
        exchange(4, operation="NodeAgent/StreamChanges", requester_kind="gateway",
                 requester_id="change-feed", requester_site=None, purpose=None, patient_ref=None),
        exchange(5, operation="NodeAgent/GetQualityReport", target_site=None),
    ]
    gw_store.log_exchanges(variants)
    for leaf in audit_log.leaves(0, len(variants)):
        event = AuditEvent.model_validate_json(leaf.leaf)   # FHIR R4B validation
        assert event.recorded is not None and event.agent[0].requestor is True
    events = [json.loads(leaf.leaf) for leaf in audit_log.leaves(0, 6)]
    assert [e["outcome"] for e in events] == ["0", "4", "8", "4", "0", "0"]
    assert [e["action"] for e in events] == ["R", "R", "R", "R", "R", "R"]
    assert events[3]["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert events[0]["entity"][0]["what"]["identifier"] == {
        "system": "urn:federation:patient-hash", "value": f"{0:032x}"}


def test_parties_are_the_nodes_that_took_part(gw_store: GatewayStore, audit_engine: Engine) -> None:
    gw_store.log_exchanges([
        exchange(0),                                           # node county-a → city-1
        exchange(1, requester_kind="operator", requester_id="alice", requester_site=None),
    ])
    with audit_engine.connect() as conn:
        rows = conn.execute(select(AuditParty.site_id, AuditParty.leaf_idx)
                            .order_by(AuditParty.leaf_idx, AuditParty.site_id)).all()
    assert [tuple(r) for r in rows] == [("city-1", 0), ("county-a", 0), ("city-1", 1)]


def test_proofs_from_tiles_verify_for_a_log_past_one_tile(gw_store: GatewayStore,
                                                         audit_log: AuditLog,
                                                         audit_engine: Engine) -> None:
    for start in range(0, 700, 100):
        gw_store.log_exchanges([exchange(i) for i in range(start, start + 100)])
    head = audit_log.head()
    assert head.tree_size == 700
    with audit_engine.connect() as conn:
        # 43 subtrees of 16 leaves, 2 of 256: 700 = 2*256 + 11*16 + 12
        assert conn.execute(select(func.count()).select_from(AuditTile)).scalar() == 43 + 2
    hashes = [leaf.leaf_hash for leaf in audit_log.leaves(0, 700)]
    rng = random.Random(8)
    for index in [0, 255, 256, 511, 512, 699, *rng.sample(range(700), 10)]:
        proof = audit_log.inclusion_proof(index, 700)
        verify_inclusion(hashes[index], index, 700, proof, head.root_hash)
    for old in [1, 256, 300, 512, 699, 700]:
        old_root = root_of(hashes[:old])
        assert audit_log.root_at(old) == old_root
        verify_consistency(old, 700, old_root, head.root_hash,
                           audit_log.consistency_proof(old, 700))


def test_concurrent_writers_get_distinct_contiguous_leaves(gw_store: GatewayStore,
                                                          audit_engine: Engine, pki) -> None:
    """Several writers (separate engines: separate replicas on PostgreSQL) at once."""
    url = audit_engine.url.render_as_string(hide_password=False)
    engines = [make_engine(url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(n: int) -> None:
        store = GatewayStore(engines[n])
        try:
            for i in range(15):
                store.log_exchanges([exchange(100 * n + i), exchange(100 * n + i + 50)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert not errors
    log = AuditLog(audit_engine)
    assert log.head().tree_size == 120
    with audit_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ExchangeLog)).scalar() == 120
    report = verify_store(audit_engine, pki.ca.ca_pem)
    assert report.ok, report.findings
    assert report.leaves_checked == 120
