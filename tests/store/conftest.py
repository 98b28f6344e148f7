"""Store fixtures: every test that takes ``db_url`` (or ``store``) runs on a fresh SQLite
file and on a fresh PostgreSQL database, both migrated to head."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pg_util import throwaway_database
from sqlalchemy import Engine

from federation.store import GatewayStore, NodeRow, make_engine, upgrade

T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, unmigrated database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'gateway.db'}"
        return
    with throwaway_database() as url:
        yield url


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> GatewayStore:
    return GatewayStore(engine)


@pytest.fixture
def sites(store: GatewayStore) -> GatewayStore:
    """The store with a small referral tree: city-1 ← county-a ← township-a1, and county-b."""
    store.upsert_site("city-1", "市第一人民医院", "city")
    store.upsert_site("county-a", "甲县人民医院", "county", "city-1")
    store.upsert_site("county-b", "乙县人民医院", "county", "city-1")
    store.upsert_site("township-a1", "甲县城关镇卫生院", "township", "county-a")
    return store


@pytest.fixture
def t0() -> dt.datetime:
    """A fixed, aware UTC instant; tests count time from it."""
    return T0


@pytest.fixture
def register(store: GatewayStore) -> Callable[..., NodeRow]:
    """``register("county-a", now=...)``: register a node with valid defaults to override."""

    def register(site_id: str, **over: Any) -> NodeRow:
        fields = dict(endpoint=f"{site_id}.example:50051", cert_serial="1a2b",
                      cert_fingerprint="ab" * 32, software_version="0.1.0",
                      capabilities=["search", "inbox"], now=T0)
        return store.register_node(site_id, **(fields | over))

    return register
