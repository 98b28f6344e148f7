"""Backup and restore of the gateway store as deploy/BACKUP.md describes it: SQLite with
the online backup API (taken while a writer keeps writing), PostgreSQL with pg_dump -Fc /
pg_restore into a fresh database. The restored store must hold the same registry, node
state, work items, exchange log, archive rows and EMPI tables, row for row, and work.

``RESTORE_CHECKS`` are run on every restored store, each taking (original engine, restored
engine): the EMPI still links, the audit log's Merkle chain recomputes to the same size.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import threading
from collections.abc import Callable

import pytest
from pg_util import throwaway_database
from sqlalchemy import Engine, select
from sqlmodel import Session

from federation.archive.store import ArchiveStore, StoredChange
from federation.audit.verify import verify_store
from federation.errors import ConfigError
from federation.identity.store import IdentityStore
from federation.store import (
    ExchangeEntry,
    GatewayStore,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from federation.store.backup import backup_sqlite, sqlite_path
from federation.store.models import metadata

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def _patient(pid: str, name: str, national_id: str, phone: str) -> bytes:
    return json.dumps({
        "resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1980-05-17",
        "name": [{"text": name, "family": name[0], "given": [name[1:]]}],
        "identifier": [{"system": "urn:federation:id:cn-resident-id", "value": national_id}],
        "telecom": [{"system": "phone", "value": phone}],
    }, ensure_ascii=False).encode()


def populate(store: GatewayStore, engine: Engine) -> None:
    """Every kind of row the store holds, with the EMPI linking two sites' records."""
    store.register_node("county-a", endpoint="10.1.0.5:50061", cert_serial="0a1b",
                        cert_fingerprint="ab" * 32, software_version="0.1.0",
                        capabilities=["Patient"], now=T0)
    store.heartbeat("county-a", 3, T0 + dt.timedelta(seconds=15))
    store.enqueue("county-a", "referral", b'{"resourceType":"Task"}', source_site="city-1",
                  item_id="wi-1")
    store.ack("county-a", "wi-1", T0 + dt.timedelta(minutes=1))
    store.enqueue("township-a1", "report", b"\x00binary\xff", item_id="wi-2")
    store.log_exchange(ExchangeEntry(T0, "corr-1", "operator", "alice", None, "county-a",
                                     "SearchPatients", "TREAT", "ph:1f2e", "ok", "OK",
                                     records=2, duration_ms=12.5))
    archive = ArchiveStore(engine, IdentityStore(engine).index)
    same_id = "110101198005170026"
    archive.apply("county-a", "e1", [
        StoredChange("Patient", "pa", 1, False, "pa", _patient("pa", "王秀英", same_id, "13800138000")),
        StoredChange("Observation", "o1", 2, False, "pa", b'{"resourceType":"Observation","id":"o1"}'),
    ], after=2, node_head=2, rejected=0, now=T0, caught_up=True)
    archive.apply("city-1", "e9", [
        StoredChange("Patient", "pc", 5, False, "pc", _patient("pc", "王秀英", same_id, "13800138000")),
        StoredChange("Condition", "c1", 6, True, "pc", None),
    ], after=6, node_head=8, rejected=1, now=T0, caught_up=False)


def snapshot(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every store table, in primary-key order."""
    out = {}
    with Session(engine) as s:
        for table in metadata.sorted_tables:
            rows = s.execute(select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


def _identity_is_linked(engine: Engine) -> None:
    identity = IdentityStore(engine)
    from federation.identity.store import RecordRef  # noqa: PLC0415 (kept local: test helper)

    a = identity.person_of(RecordRef("county-a", "pa"))
    assert a is not None and a == identity.person_of(RecordRef("city-1", "pc"))


def _audit_log_intact(original: Engine, restored: Engine) -> None:
    report = verify_store(restored, b"")
    assert report.ok, report.first()
    assert report.tree_size == verify_store(original, b"").tree_size > 0


#: run on every restored store with (original, restored)
RESTORE_CHECKS: list[Callable[[Engine, Engine], None]] = [
    lambda original, restored: _identity_is_linked(restored),
    lambda original, restored: _audit_log_intact(original, restored),
]


def check_restored(original: Engine, restored: Engine) -> None:
    assert current_revision(restored) == head_revision()
    before, after = snapshot(original), snapshot(restored)
    for table in ("site", "node", "work_item", "exchange_log", "site_resource",
                  "feed_cursor", "identity_person", "identity_record", "identity_block",
                  "identity_event"):
        assert before[table], f"{table} was not populated"
    assert after == before
    store = GatewayStore(restored)
    assert store.get_node("county-a").heartbeat_seq == 3
    assert [i.item_id for i in store.pending_for("township-a1")] == ["wi-2"]
    assert store.pending_for("township-a1")[0].payload == b"\x00binary\xff"
    archive = ArchiveStore(restored)
    assert [r.resource_id for r in archive.resources_of("county-a", "pa")] == ["pa", "o1"]
    assert archive.cursor("city-1").node_head == 8
    upgrade(restored)                       # a restored store is at head: a no-op
    for check in RESTORE_CHECKS:
        check(original, restored)


def _sites(url: str) -> tuple[GatewayStore, Engine]:
    upgrade(url)
    engine = make_engine(url)
    store = GatewayStore(engine)
    store.upsert_site("city-1", "市第一人民医院", "city")
    store.upsert_site("county-a", "甲县人民医院", "county", "city-1")
    store.upsert_site("township-a1", "甲县城关镇卫生院", "township", "county-a")
    return store, engine


def test_sqlite_online_backup_restores_intact(tmp_path):
    sites, engine = _sites(f"sqlite:///{tmp_path / 'live' / 'gateway.db'}")
    populate(sites, engine)
    expected = snapshot(engine)
    stop = threading.Event()
    written = []

    def writer() -> None:                   # the gateway keeps logging during the backup
        n = 0
        while not stop.is_set() and n < 500:
            n += 1
            sites.log_exchange(ExchangeEntry(T0, f"busy-{n}", "gateway", "sweeper", None,
                                             None, "Heartbeat", None, None, "ok", "OK"))
            written.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        backup = backup_sqlite(sqlite_path(str(engine.url)), tmp_path / "backups" / "gw.db",
                               pages_per_step=1)
    finally:
        stop.set()
        thread.join()
    assert not list(backup.parent.glob("*.partial"))
    # restore: the backup file becomes a new gateway's database
    restored_path = tmp_path / "restored" / "gateway.db"
    restored_path.parent.mkdir()
    shutil.copy(backup, restored_path)
    restored = make_engine(f"sqlite:///{restored_path}")
    try:
        got = snapshot(restored)
        busy = [r for r in got["exchange_log"] if r[2].startswith("busy-")]
        assert len(busy) <= len(written)    # a consistent moment during the writes
        # every exchange the backup holds has its audit leaf, and the head covers them all
        (head,) = got["audit_head"]
        assert len(got["audit_leaf"]) == len(got["exchange_log"]) == head[1]
        # the rows from before the backup are there unchanged; the writer's are extra
        for table, rows in got.items():
            if table == "exchange_log":
                rows = [r for r in rows if not r[2].startswith("busy-")]
            elif table == "audit_leaf":
                rows = rows[:len(expected[table])]
            elif table in ("audit_head", "audit_tile"):
                continue                    # they describe the longer log
            assert rows == expected[table], table
        assert verify_store(restored, b"").ok
    finally:
        restored.dispose()
    # once the writer has stopped, a second backup is the live store exactly
    again = backup_sqlite(sqlite_path(str(engine.url)), tmp_path / "backups" / "gw2.db")
    restored = make_engine(f"sqlite:///{again}")
    try:
        check_restored(engine, restored)
    finally:
        restored.dispose()
        engine.dispose()
    assert written, "the writer never ran alongside the backup"


@pytest.fixture
def pg_sites():
    with throwaway_database(prefix="fed_backup") as url:
        store, engine = _sites(url)
        yield store, engine
        engine.dispose()


@pytest.mark.postgres
def test_postgres_dump_restores_intact(pg_sites, tmp_path):
    sites, engine = pg_sites
    for tool in ("pg_dump", "pg_restore"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install postgresql-client)")
    populate(sites, engine)
    libpq = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = tmp_path / "gateway.dump"
    subprocess.run(["pg_dump", "--format=custom", "--no-owner", f"--file={dump}", libpq],
                   check=True, capture_output=True, timeout=120)
    with throwaway_database(prefix="fed_restore") as url:
        target = make_engine(url)
        try:
            target_libpq = target.url.set(drivername="postgresql").render_as_string(
                hide_password=False)
            subprocess.run(["pg_restore", "--no-owner", "--exit-on-error",
                            f"--dbname={target_libpq}", str(dump)],
                           check=True, capture_output=True, timeout=120)
            check_restored(engine, target)
            # sequences came along: new rows get fresh ids, not duplicates of restored ones
            GatewayStore(target).enqueue("county-a", "notice", b"{}", item_id="wi-after")
            seqs = [r[0] for r in snapshot(target)["work_item"]]
            assert len(seqs) == len(set(seqs)) == 3
        finally:
            target.dispose()


def test_backup_refuses_what_it_cannot_copy(tmp_path):
    with pytest.raises(ConfigError, match="pg_dump"):
        sqlite_path("postgresql+psycopg://u@h/db")
    from federation.errors import SourceError

    with pytest.raises(SourceError, match="does not exist"):
        backup_sqlite(tmp_path / "none.db", tmp_path / "out.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite" * 500)
    with pytest.raises(SourceError, match="failed"):
        backup_sqlite(garbage, tmp_path / "out.db")
    assert not (tmp_path / "out.db").exists() and not (tmp_path / "out.db.partial").exists()


def test_the_cli_backs_up_a_gateway_store(tmp_path):
    from click.testing import CliRunner

    from federation.cli import cli

    db = tmp_path / "gateway.db"
    upgrade(f"sqlite:///{db}")
    config = tmp_path / "gateway.toml"
    config.write_text(f'database_url = "sqlite:///{db}"\n[tls]\ncert = "c"\nkey = "k"\nca = "a"\n')
    out = tmp_path / "b" / "gateway-backup.db"
    result = CliRunner().invoke(cli, ["db", "backup", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "backed up" in result.output and out.is_file()
    assert current_revision(make_engine(f"sqlite:///{out}")) == head_revision()
