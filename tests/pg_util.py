"""Throwaway PostgreSQL databases for tests, as plain functions any conftest can call.

``FEDERATION_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
names a server and a database to connect to for CREATE/DROP DATABASE. Each test gets a
fresh, uniquely named database, so tests — and parallel test runs — never share state.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

__all__ = [
    "DEFAULT_ADMIN_URL",
    "admin_url",
    "unreachable_reason",
    "require_postgres",
    "create_database",
    "drop_database",
    "throwaway_database",
]

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def admin_url() -> str:
    return os.environ.get("FEDERATION_TEST_POSTGRES_URL") or DEFAULT_ADMIN_URL


@functools.cache
def unreachable_reason(url: str) -> str | None:
    """None if PostgreSQL answers at ``url``, else why not (asked once per process)."""
    try:
        engine = _admin_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure means "not usable", and says why
        orig = getattr(exc, "orig", None) or exc
        return str(orig).strip().splitlines()[0] if str(orig).strip() else type(exc).__name__
    return None


def require_postgres(url: str | None = None) -> str:
    """The admin URL; skips the test when PostgreSQL is unreachable, fails it in CI."""
    url = url or admin_url()
    reason = unreachable_reason(url)
    if reason is not None:
        where = make_url(url).render_as_string(hide_password=True)
        message = f"PostgreSQL not reachable at {where}: {reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (PostgreSQL is required in CI)", pytrace=False)
        pytest.skip(message)
    return url


def create_database(admin: str, prefix: str = "fed_test") -> str:
    """Create an empty database named ``<prefix>_<8 hex>``; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    if not _NAME.match(name):
        raise ValueError(f"not a safe database name: {name!r}")
    engine = _admin_engine(admin)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return _psycopg(admin).set(database=name).render_as_string(hide_password=False)


def drop_database(admin: str, url: str) -> None:
    """Drop the database ``url`` names, ending any sessions still connected to it."""
    name = make_url(url).database or ""
    if not _NAME.match(name):
        raise ValueError(f"refusing to drop {name!r}: not a test database name")
    engine = _admin_engine(admin)
    try:
        with engine.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = :name AND pid <> pg_backend_pid()"),
                {"name": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


@contextmanager
def throwaway_database(admin: str | None = None, prefix: str = "fed_test") -> Iterator[str]:
    """``with throwaway_database() as url:`` — a fresh database, dropped afterwards.

    Call inside a test or fixture: it skips (or fails in CI) without PostgreSQL.
    """
    admin = require_postgres(admin)
    url = create_database(admin, prefix)
    try:
        yield url
    finally:
        drop_database(admin, url)


def _admin_engine(url: str) -> Engine:
    return create_engine(_psycopg(url), isolation_level="AUTOCOMMIT", poolclass=NullPool,
                         connect_args={"connect_timeout": 3})


def _psycopg(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):  # psycopg 3 is the installed driver
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed
