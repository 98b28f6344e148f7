"""Audit fixtures: a migrated store on SQLite and PostgreSQL, exchanges to log, and the
gateway's signer from the session's consortium CA."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pg_util import throwaway_database
from sqlalchemy import Engine

from federation.audit.log import AuditLog
from federation.audit.tree_heads import TreeHeadSigner
from federation.security.signing import Signer
from federation.store import GatewayStore, make_engine, upgrade


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"),
                        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)])
def audit_engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gateway.db'}"
        upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()
        return
    with throwaway_database() as url:
        upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def gw_store(audit_engine: Engine) -> GatewayStore:
    store = GatewayStore(audit_engine)
    for site, tier in (("city-1", "city"), ("county-a", "county"), ("county-b", "county")):
        store.upsert_site(site, site, tier)
    return store


@pytest.fixture
def audit_log(audit_engine: Engine) -> AuditLog:
    return AuditLog(audit_engine)


@pytest.fixture
def make_signer(pki) -> Callable[[AuditLog], TreeHeadSigner]:  # type: ignore[no-untyped-def]
    def make(log: AuditLog, name: str = "gateway") -> TreeHeadSigner:
        t = pki.tls(name)
        return TreeHeadSigner(log, Signer(t.cert.read_bytes(), t.key.read_bytes()))
    return make
