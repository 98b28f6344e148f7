"""`verify` recomputes the log from the store and names the first bad entry for every
kind of tampering done directly in the database."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from audit_factories import exchange, rebuild_derived
from sqlalchemy import Engine, text

from federation.audit.log import AuditLog, TreeHead
from federation.audit.merkle import leaf_hash
from federation.audit.tree_heads import TreeHeadSigner, tree_head_payload, verify_tree_head
from federation.audit.verify import verify_store
from federation.errors import IntegrityError
from federation.security.signing import Signer
from federation.store import GatewayStore

N = 300


@pytest.fixture
def logged(gw_store: GatewayStore, audit_log: AuditLog,
           make_signer: Callable[..., TreeHeadSigner]) -> AuditLog:
    """N exchanges, a tree head signed at 200 and one at N."""
    gw_store.log_exchanges([exchange(i) for i in range(200)])
    make_signer(audit_log).sign_head()
    gw_store.log_exchanges([exchange(i) for i in range(200, N)])
    make_signer(audit_log).sign_head()
    return audit_log


def _exec(engine: Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def _first(engine: Engine, ca: bytes) -> tuple[str, int | None]:
    report = verify_store(engine, ca)
    assert not report.ok
    first = report.first
    assert first is not None
    return first.kind, first.leaf


def test_an_untouched_log_verifies(logged: AuditLog, audit_engine: Engine, pki) -> None:
    report = verify_store(audit_engine, pki.ca.ca_pem)
    assert report.ok, report.findings
    assert (report.tree_size, report.leaves_checked, report.tree_heads_checked) == (N, N, 2)


def test_an_edited_leaf_is_named(logged: AuditLog, audit_engine: Engine, pki) -> None:
    _exec(audit_engine, "UPDATE audit_leaf SET leaf = :b WHERE idx = 123",
          b=logged.leaves(123, 124)[0].leaf.replace(b'"outcome":"0"', b'"outcome":"8"'))
    assert _first(audit_engine, pki.ca.ca_pem) == ("edited", 123)


def test_an_edited_exchange_row_is_named(logged: AuditLog, audit_engine: Engine, pki) -> None:
    xid = logged.leaves(77, 78)[0].exchange_id
    _exec(audit_engine, "UPDATE exchange_log SET requester_id = 'nobody' WHERE id = :x", x=xid)
    assert _first(audit_engine, pki.ca.ca_pem) == ("exchange", 77)


def test_a_deleted_leaf_is_named(logged: AuditLog, audit_engine: Engine, pki) -> None:
    _exec(audit_engine, "DELETE FROM audit_leaf WHERE idx = 42")
    report = verify_store(audit_engine, pki.ca.ca_pem)
    assert report.first is not None and (report.first.kind, report.first.leaf) == ("deleted", 42)
    assert {f.kind for f in report.findings} >= {"deleted", "exchange", "tree-head", "head"}


def test_a_deleted_exchange_row_is_named(logged: AuditLog, audit_engine: Engine, pki) -> None:
    xid = logged.leaves(250, 251)[0].exchange_id
    _exec(audit_engine, "DELETE FROM exchange_log WHERE id = :x", x=xid)
    assert _first(audit_engine, pki.ca.ca_pem) == ("exchange", 250)


def test_an_exchange_written_around_the_trail_is_found(logged: AuditLog, audit_engine: Engine,
                                                       pki) -> None:
    _exec(audit_engine, "DELETE FROM audit_party WHERE leaf_idx >= 299")
    _exec(audit_engine, "DELETE FROM audit_leaf WHERE idx = 299")
    report = verify_store(audit_engine, pki.ca.ca_pem)
    kinds = {f.kind for f in report.findings}
    assert "exchange" in kinds and "tree-head" in kinds
    assert report.first is not None and report.first.leaf is not None


def test_reordered_leaves_are_named(logged: AuditLog, audit_engine: Engine, pki) -> None:
    a, b = logged.leaves(10, 11)[0], logged.leaves(20, 21)[0]
    for target, source in ((a, b), (b, a)):
        _exec(audit_engine, "UPDATE audit_leaf SET leaf = :l, leaf_hash = :h, exchange_id = :x "
              "WHERE idx = :i", l=source.leaf, h=source.leaf_hash, x=source.exchange_id,
              i=target.index)
    report = verify_store(audit_engine, pki.ca.ca_pem)
    assert report.first is not None
    assert (report.first.kind, report.first.leaf) == ("reordered", 10)
    assert "appended as leaf 20" in report.first.message


def test_a_rewrite_with_recomputed_hashes_breaks_the_signed_root(logged: AuditLog,
                                                                 audit_engine: Engine,
                                                                 pki) -> None:
    """The attacker edits a leaf *and* the exchange row, recomputes the leaf hash, the tiles
    and the head — everything but the gateway's signatures."""
    leaf = logged.leaves(5, 6)[0]
    forged = leaf.leaf.replace(b'"value":"county-a"', b'"value":"county-b"')
    assert forged != leaf.leaf
    _exec(audit_engine, "UPDATE audit_leaf SET leaf = :l, leaf_hash = :h WHERE idx = 5",
          l=forged, h=leaf_hash(forged))
    _exec(audit_engine, "UPDATE exchange_log SET requester_id = 'county-b', "
          "requester_site = 'county-b' WHERE id = :x", x=leaf.exchange_id)
    rebuild_derived(logged, audit_engine)
    report = verify_store(audit_engine, pki.ca.ca_pem)
    kinds = [f.kind for f in report.findings]
    assert "tree-head" in kinds and "edited" not in kinds and "exchange" not in kinds
    assert report.first is not None and report.first.kind == "tree-head"
    assert report.first.leaf == 0  # leaves 0–199 no longer give the root signed at 200


def test_tree_heads_need_the_gateway_certificate_from_the_consortium_ca(
        logged: AuditLog, audit_engine: Engine, pki, tmp_path) -> None:
    sth = logged.latest_tree_head()
    assert sth is not None
    verify_tree_head(sth, pki.ca.ca_pem)
    # a certificate from another CA, a node's certificate, and a tampered root: all refused
    for name in ("foreign", "county-a"):
        t = pki.tls(name)
        bad = Signer(t.cert.read_bytes(), t.key.read_bytes())
        payload = tree_head_payload(sth.tree_size, sth.timestamp_ms, sth.root_hash)
        forged = TreeHead(sth.tree_size, sth.root_hash, sth.timestamp_ms, bad.sign(payload),
                          bad.cert_pem.decode())
        with pytest.raises(IntegrityError, match="did not issue|not the gateway"):
            verify_tree_head(forged, pki.ca.ca_pem)
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_tree_head(TreeHead(sth.tree_size, bytes(32), sth.timestamp_ms, sth.signature,
                                  sth.signer_cert), pki.ca.ca_pem)
    _exec(audit_engine, "UPDATE audit_tree_head SET signer_cert = :c WHERE tree_size = :n",
          c=pki.tls("foreign").cert.read_text(), n=sth.tree_size)
    assert _first(audit_engine, pki.ca.ca_pem) == ("signature", N - 1)


def test_truncating_the_log_is_caught_by_the_signed_size(logged: AuditLog,
                                                         audit_engine: Engine, pki) -> None:
    _exec(audit_engine, "DELETE FROM audit_leaf WHERE idx >= 280")
    _exec(audit_engine, "DELETE FROM exchange_log WHERE id > :x",
          x=logged.leaves(279, 280)[0].exchange_id)
    rebuild_derived(logged, audit_engine)
    report = verify_store(audit_engine, pki.ca.ca_pem)
    assert report.first is not None
    assert (report.first.kind, report.first.leaf) == ("tree-head", 280)


def test_verifying_in_several_processes_finds_the_same(logged: AuditLog, audit_engine: Engine,
                                                       pki, monkeypatch) -> None:
    from federation.audit import verify as verify_module

    monkeypatch.setattr(verify_module, "CHUNK", 64)      # five ranges for the workers
    _exec(audit_engine, "DELETE FROM audit_leaf WHERE idx = 150")
    xid = logged.leaves(70, 71)[0].exchange_id
    _exec(audit_engine, "UPDATE exchange_log SET target_site = 'county-b' WHERE id = :x", x=xid)
    alone = verify_store(audit_engine, pki.ca.ca_pem)
    together = verify_store(audit_engine, pki.ca.ca_pem, workers=2)
    assert sorted(map(repr, alone.findings)) == sorted(map(repr, together.findings))
    assert together.first is not None
    assert (together.first.kind, together.first.leaf) == ("exchange", 70)
    assert together.leaves_checked == N - 1


def test_a_rewrite_that_leaves_the_tiles_behind_is_narrowed_to_sixteen_leaves(
        logged: AuditLog, audit_engine: Engine, pki) -> None:
    leaf = logged.leaves(37, 38)[0]
    forged = leaf.leaf.replace(b'"value":"county-a"', b'"value":"county-b"')
    _exec(audit_engine, "UPDATE audit_leaf SET leaf = :l, leaf_hash = :h WHERE idx = 37",
          l=forged, h=leaf_hash(forged))
    _exec(audit_engine, "UPDATE exchange_log SET requester_id = 'county-b', "
          "requester_site = 'county-b' WHERE id = :x", x=leaf.exchange_id)
    report = verify_store(audit_engine, pki.ca.ca_pem)
    tiles = sorted(f.leaf for f in report.findings if f.kind == "tile")
    assert tiles[-1] == 32 and "leaves 32–47" in next(
        f.message for f in report.findings if f.kind == "tile" and f.leaf == 32)
