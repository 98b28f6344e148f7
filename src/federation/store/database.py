"""Engines and migrations for the gateway store: SQLite embedded, PostgreSQL at scale.

SQLite runs in WAL mode with foreign keys on, and every write transaction starts with
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can fail at once
with "database is locked" when another connection committed in between, whatever the
busy timeout. Read-only sessions (see :func:`read_only`) keep the cheap deferred ``BEGIN``.

Migrations are Alembic scripts packaged next to this module and run programmatically;
no ``alembic.ini`` is involved. On PostgreSQL the upgrade holds an advisory lock, so
several gateway replicas starting at once migrate the database exactly once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    create_engine,
    event,
    false,
    or_,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool

from federation.errors import ConfigError, Unavailable

__all__ = [
    "MIGRATIONS_DIR",
    "make_engine",
    "read_only",
    "upgrade",
    "current_revision",
    "head_revision",
    "check_connection",
    "describe",
    "failure_reason",
    "keys_in",
    "keys_in_sql",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Any constant will do; it only has to be the same for every replica.
_MIGRATION_LOCK = 0x6665_6447_6174_65  # "fedGate"
#: how long a SQLite writer waits for the lock: always, and while another process migrates
_BUSY_TIMEOUT_MS = 5000
_MIGRATION_WAIT_MS = 120_000
_READ_ONLY = "federation_read_only"
# Alembic's ``context`` and ``op`` are module-global proxies: two migration runs in one
# process at once (two embedded gateways starting in threads) would trample each other.
_ALEMBIC = threading.Lock()


#: an INSERT's rowcount read after SQLAlchemy has closed its cursor is -1 with psycopg 3.3:
#: keep every statement's count (``ON CONFLICT DO NOTHING`` tells a replay by it)
_ROWCOUNT = {"preserve_rowcount": True}


def make_engine(url: str) -> Engine:
    """An engine for ``sqlite:///path`` or ``postgresql+psycopg://user@host/db``.

    ``postgresql://`` and ``postgres://`` mean psycopg 3, the driver the gateway ships with.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return create_engine(
        parsed,
        execution_options=_ROWCOUNT,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "federation-gateway"},
    )


def read_only(engine: Engine) -> Engine:
    """The same engine (and pool), for sessions that only read: a plain ``BEGIN`` on SQLite."""
    return engine.execution_options(**{_READ_ONLY: True})


def upgrade(url_or_engine: str | Engine) -> None:
    """Migrate the database to the newest revision; a no-op when it is already there."""
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with _ALEMBIC, engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:  # replicas starting together queue behind one migrating process
                conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                    f"PRAGMA busy_timeout = {_MIGRATION_WAIT_MS}")
            try:
                with conn.begin():
                    if not sqlite:
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                     {"k": _MIGRATION_LOCK})
                    cfg = _alembic_config()
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
            finally:
                if sqlite:
                    conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                        f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first upgrade."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision this version of the gateway ships."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def check_connection(engine: Engine) -> None:
    """Raise :class:`Unavailable` naming the database (never its password) if unreachable."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        raise Unavailable(
            f"cannot reach the gateway database ({describe(engine.url)}): "
            f"{failure_reason(exc, engine.url)}"
        ) from None


def failure_reason(exc: DBAPIError, url: URL) -> str:
    """The first line of the driver's message, with the password (if any) blanked."""
    lines = str(exc.orig or exc).strip().splitlines()
    reason = lines[0] if lines else type(exc.orig or exc).__name__
    return reason.replace(str(url.password), "***") if url.password else reason


def describe(url: URL) -> str:
    """A person-readable name for a database URL, without the password."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database or ':memory:'}"
    host = f"{url.host or 'localhost'}:{url.port or 5432}"
    user = f" as user {url.username}" if url.username else ""
    return f"PostgreSQL database '{url.database}' on {host}{user}"


# ---------------------------------------------------------------------------- internals


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"database_url is not a database URL: {url!r}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ConfigError(
            "database_url must be sqlite:///path/to/gateway.db or "
            f"postgresql+psycopg://user@host:5432/dbname, not {parsed.drivername}://…"
        )
    return parsed


def _sqlite_engine(url: URL) -> Engine:
    memory = url.database in (None, "", ":memory:")
    if not memory:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 5},
                              "execution_options": _ROWCOUNT}
    if memory:  # one shared connection, or every session would see its own empty database
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, in _sqlite_on_begin
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    _enter_wal(cur)
    for pragma in ("foreign_keys=ON", "synchronous=NORMAL"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _enter_wal(cur: Any) -> None:
    """Switch a new database file to WAL. SQLite answers a journal-mode change that meets
    another process's lock with SQLITE_BUSY at once, without its busy handler, so several
    replicas opening a fresh file together retry here for up to the busy timeout."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_begin(conn: Connection) -> None:
    read = conn.get_execution_options().get(_READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def keys_in(columns: Sequence[Any], keys: Iterable[Sequence[object]]) -> ColumnElement[bool]:
    """``(c1, …, cn) IN keys`` as an OR over the keys' distinct prefixes, each
    ``c1 = ? AND … AND cn IN (…)``. SQLite plans a row-value ``IN`` list as a scan of the
    whole table (a second per million rows); this form is one index search per prefix on
    SQLite and PostgreSQL alike. No keys: a condition that is never true."""
    groups = _by_prefix(keys)
    if not groups:
        return false()
    *head, last = columns
    return or_(*(and_(*(c == v for c, v in zip(head, prefix, strict=True)), last.in_(values))
                 for prefix, values in groups.items()))


def keys_in_sql(columns: Sequence[str], keys: Iterable[Sequence[object]]
                ) -> tuple[str, dict[str, object]]:
    """:func:`keys_in` as SQL text and its parameters, for a hot path that builds its
    query per call (SQLAlchemy's expression objects and their cache keys cost more than
    the query). ``columns`` are column names. No keys: a condition that is never true."""
    groups = _by_prefix(keys)
    if not groups:
        return "1 = 0", {}
    *head, last = columns
    terms: list[str] = []
    params: dict[str, object] = {}
    for g, (prefix, values) in enumerate(groups.items()):
        params |= {f"k{g}_{c}": v for c, v in enumerate(prefix)}
        params |= {f"k{g}_in{n}": v for n, v in enumerate(values)}
        equal = [f"{name} = :k{g}_{c}" for c, name in enumerate(head)]
        listed = ", ".join(f":k{g}_in{n}" for n in range(len(values)))
        terms.append(f"({' AND '.join([*equal, f'{last} IN ({listed})'])})")
    return " OR ".join(terms), params


def _by_prefix(keys: Iterable[Sequence[object]]) -> dict[tuple[object, ...], list[object]]:
    """Keys grouped by all but their last column: {prefix: [last values]}."""
    groups: dict[tuple[object, ...], list[object]] = {}
    for key in keys:
        groups.setdefault(tuple(key[:-1]), []).append(key[-1])
    return groups
