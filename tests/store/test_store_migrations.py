"""The packaged migrations: reach head, are idempotent, and produce what the models say."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from federation.errors import ConfigError, Unavailable
from federation.store import (
    GatewayStore,
    check_connection,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from federation.store.models import metadata

TABLES = {"site", "node", "node_event", "exchange_log", "work_item", "site_resource",
          "feed_cursor", "identity_person", "identity_record", "identity_block",
          "identity_event", "identity_review", "identity_no_match", "identity_model",
          "archive_consent", "export_job", "export_file",
          "workflow_task", "workflow_event", "workflow_resource", "workflow_message",
          "workflow_notice", "workflow_job",
          "audit_head", "audit_leaf", "audit_tile", "audit_party", "audit_tree_head",
          "audit_verification"}


def _diffs(engine: Engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)


def test_upgrade_reaches_head_and_twice_is_a_noop(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) is None
        upgrade(empty_db_url)
        assert current_revision(engine) == head_revision() is not None
        GatewayStore(engine).upsert_site("city-1", "City", "city")
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert GatewayStore(engine).get_site("city-1") is not None
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrated_schema_matches_models(engine: Engine) -> None:
    assert _diffs(engine) == []


def test_schema_comparison_notices_drift(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_exchange_log_target_site"))
    assert any(d[0] == "add_index" for d in _diffs(engine))


def test_sqlite_file_gets_its_folder(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/deep/er/gateway.db")
    try:
        upgrade(engine)
        assert (tmp_path / "deep" / "er" / "gateway.db").exists()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        engine.dispose()


def test_plain_postgresql_url_means_psycopg() -> None:
    engine = make_engine("postgresql://gw@db.example/federation")
    assert engine.url.drivername == "postgresql+psycopg"


@pytest.mark.parametrize("url", ["mysql://x@y/z", "not a url"])
def test_unsupported_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="database_url"):
        make_engine(url)


def test_unreachable_database_names_host_and_db_but_not_password() -> None:
    engine = make_engine("postgresql+psycopg://gw:s3cret-pw@127.0.0.1:1/federation")
    try:
        with pytest.raises(Unavailable) as caught:
            check_connection(engine)
        with pytest.raises(Unavailable):
            GatewayStore(engine).ping()
        with pytest.raises(Unavailable, match="'federation' on 127.0.0.1:1"):
            GatewayStore(engine).list_sites()
    finally:
        engine.dispose()
    assert "'federation' on 127.0.0.1:1" in caught.value.message
    assert "s3cret-pw" not in caught.value.message


# Each replica is its own process: import first, then all upgrade at the same instant.
_REPLICA = """
import sys, time
from federation.store import upgrade
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
upgrade(sys.argv[1])
"""


def test_replicas_starting_together_migrate_once(empty_db_url: str) -> None:
    start_at = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", _REPLICA, empty_db_url, start_at],
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    failures = [err for p in procs if (err := p.communicate(timeout=60)[1]) and p.returncode]
    assert failures == []
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_one_process_may_migrate_several_databases_at_once(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path}/gw{i}.db" for i in range(4)]
    barrier = threading.Barrier(len(urls))

    def start(url: str) -> str | None:
        barrier.wait(timeout=10)
        upgrade(url)
        engine = make_engine(url)
        try:
            return current_revision(engine)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(len(urls)) as pool:
        assert set(pool.map(start, urls)) == {head_revision()}
